//! The built-in schema registry: the Avro schemas of the contracts, served with Confluent's
//! registry API under `/registry/` on the admin port, so producers using Confluent serializers can
//! point at meshgate.
//!
//! - **Subjects** follow TopicNameStrategy: a contract on topic `T` is subject `T-value`.
//! - **Versions** are the contract's `schema.history` files (oldest first) and then its current
//!   schema: versions 1..=n.
//! - **Ids** are derived from the schema itself, so every gateway instance and every restart gives
//!   the same id: FNV-1a (64-bit) of the schema's [`identity_form`], folded into 1..=2^31-1.
//!   The identity form keeps everything that changes how data is read (logical types, defaults,
//!   aliases, precision and scale); the Parsing Canonical Form, used before, drops logical types
//!   and defaults, so `timestamp-millis` and `timestamp-micros` versions shared one id and a
//!   consumer could be served the other's schema. A contract may pin the id of its current
//!   schema with `schema.id` (to match an existing registry). Two different schemas that land on
//!   one id are a load error that names both; pinning one resolves it.
//! - **Legacy ids.** The id the Parsing Canonical Form gave a schema is still served for it, for
//!   records written before, but only while no other schema of the set shares that form: an
//!   ambiguous legacy id is served for neither.
//! - Only `format: avro` contracts are served; the registry is read-only (lookups only).

use std::collections::{BTreeMap, HashMap};

use super::error::SchemaError;
use serde_json::{json, Value as Json};

/// One registered schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: u32,
    pub id: u32,
    /// The schema as compact JSON text.
    pub schema: String,
    canonical: String,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    subjects: BTreeMap<String, (String, Vec<Version>)>,
    by_id: HashMap<u32, String>,
    /// Legacy (Parsing Canonical Form) id → the id of the one schema it stands for.
    legacy: HashMap<u32, u32>,
}

/// A schema the registry serves: subject, compatibility, versions' texts (oldest first), and an
/// optional pinned id for the last one.
pub struct Source<'a> {
    pub subject: String,
    pub compatibility: &'static str,
    pub schemas: Vec<&'a str>,
    pub pinned_id: Option<u32>,
}

/// The id a schema gets when it is not pinned.
pub fn derived_id(canonical: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 0x7fff_ffff) as u32 + 1
}

/// The form a schema's id is derived from and lookups compare: the parsed schema as Avro writes
/// it out (so `"string"` and `{"type": "string"}` agree, as do differently spaced texts), with
/// every `doc` removed (documentation does not change how data is read) and object keys sorted.
pub fn identity_form(text: &str) -> Result<String, SchemaError> {
    let schema =
        apache_avro::Schema::parse_str(text).map_err(|e| SchemaError::Avro(e.to_string()))?;
    let json = serde_json::to_value(&schema).map_err(|e| SchemaError::Avro(e.to_string()))?;
    Ok(normalized(json).to_string())
}

fn normalized(v: Json) -> Json {
    match v {
        Json::Object(map) => {
            let mut entries: Vec<(String, Json)> =
                map.into_iter().filter(|(k, _)| k != "doc").collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, normalized(v)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(items.into_iter().map(normalized).collect()),
        other => other,
    }
}

/// The id the Parsing Canonical Form gave a schema (meshgate before identity forms).
fn legacy_id(text: &str) -> Option<u32> {
    apache_avro::Schema::parse_str(text)
        .ok()
        .map(|s| derived_id(&s.canonical_form()))
}

impl Registry {
    /// Builds the registry; errors are (subject, message).
    pub fn build(sources: Vec<Source<'_>>) -> Result<Registry, Vec<(String, String)>> {
        let mut reg = Registry::default();
        let mut errors = Vec::new();
        let mut id_owner: HashMap<u32, String> = HashMap::new();
        let mut legacy_claims: HashMap<u32, Vec<(u32, String)>> = HashMap::new();
        for src in sources {
            let mut versions = Vec::new();
            let last = src.schemas.len().saturating_sub(1);
            for (i, text) in src.schemas.iter().enumerate() {
                let canonical = match identity_form(text) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push((
                            src.subject.clone(),
                            format!("schema version {}: {e}", i + 1),
                        ));
                        continue;
                    }
                };
                let id = match (i == last, src.pinned_id) {
                    (true, Some(pinned)) => pinned,
                    _ => derived_id(&canonical),
                };
                match id_owner.get(&id) {
                    Some(other) if *other != canonical => errors.push((
                        src.subject.clone(),
                        format!("schema id {id} is already used by a different schema; pin one with `schema.id`"),
                    )),
                    _ => {
                        id_owner.insert(id, canonical.clone());
                    }
                }
                let schema = serde_json::from_str::<Json>(text)
                    .map(|j| j.to_string())
                    .unwrap_or_else(|_| text.to_string());
                reg.by_id.entry(id).or_insert_with(|| schema.clone());
                if let Some(old) = legacy_id(text).filter(|old| *old != id) {
                    legacy_claims
                        .entry(old)
                        .or_default()
                        .push((id, canonical.clone()));
                }
                versions.push(Version {
                    version: i as u32 + 1,
                    id,
                    schema,
                    canonical,
                });
            }
            reg.subjects
                .insert(src.subject, (src.compatibility.to_string(), versions));
        }
        for (old, claims) in legacy_claims {
            let (id, form) = &claims[0];
            let one_schema = claims.iter().all(|(_, f)| f == form);
            if one_schema && !reg.by_id.contains_key(&old) {
                reg.legacy.insert(old, *id);
            } else if !one_schema {
                tracing::warn!(
                    legacy_id = old,
                    "legacy schema id names several schemas; serving it for none"
                );
            }
        }
        if errors.is_empty() {
            Ok(reg)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// The schema text for `id` (a current id, or an unambiguous legacy one).
    pub fn schema_by_id(&self, id: u32) -> Option<&str> {
        let id = self.legacy.get(&id).copied().unwrap_or(id);
        self.by_id.get(&id).map(String::as_str)
    }

    /// Legacy id → current id, for every legacy id still served.
    pub fn legacy_ids(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.legacy.iter().map(|(old, new)| (*old, *new))
    }

    pub fn subjects(&self) -> Vec<&str> {
        self.subjects.keys().map(String::as_str).collect()
    }

    pub fn versions(&self, subject: &str) -> Option<&[Version]> {
        self.subjects.get(subject).map(|(_, v)| v.as_slice())
    }

    pub fn compatibility(&self, subject: &str) -> Option<&str> {
        self.subjects.get(subject).map(|(c, _)| c.as_str())
    }

    /// The version of `subject` whose schema is `text` (compared by canonical form).
    pub fn lookup(&self, subject: &str, text: &str) -> Option<&Version> {
        let wanted = identity_form(text).ok()?;
        self.versions(subject)?
            .iter()
            .find(|v| v.canonical == wanted)
    }
}

/// A Confluent-style JSON body for one version of a subject.
pub fn version_body(subject: &str, v: &Version) -> Json {
    json!({ "subject": subject, "version": v.version, "id": v.id, "schema": v.schema })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"O","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;
    const V2: &str = r#"{"type": "record", "name": "O", "namespace": "shop", "doc": "docs do not change ids",
        "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"], "default": null}]}"#;

    #[test]
    fn ids_are_derived_from_the_identity_form_and_versions_follow_history() {
        let reg = Registry::build(vec![Source {
            subject: "shop.o.v1-value".into(),
            compatibility: "BACKWARD",
            schemas: vec![V1, V2],
            pinned_id: None,
        }])
        .unwrap();
        let versions = reg.versions("shop.o.v1-value").unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(versions[0].id, derived_id(&identity_form(V1).unwrap()));
        // Same schema, different whitespace: same id, found by lookup.
        let spaced = V1.replace(',', ", ");
        assert_eq!(reg.lookup("shop.o.v1-value", &spaced).unwrap().version, 1);
        assert!(reg
            .lookup("shop.o.v1-value", r#"{"type":"string"}"#)
            .is_none());
        assert!(reg.schema_by_id(versions[1].id).unwrap().contains("\"n\""));
        // The derivation is fixed: this is what every instance computes for V1.
        assert_eq!(
            identity_form(V1).unwrap(),
            r#"{"fields":[{"name":"id","type":"string"}],"name":"O","namespace":"shop","type":"record"}"#
        );
        // A dotted full name is the same name.
        let dotted =
            r#"{"type":"record","name":"shop.O","fields":[{"name":"id","type":"string"}]}"#;
        assert_eq!(identity_form(dotted), identity_form(V1));
        assert!((1..=0x7fff_ffff).contains(&versions[0].id));
    }

    const MILLIS: &str = r#"{"type":"record","name":"E","fields":[{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    const MICROS: &str = r#"{"type":"record","name":"E","fields":[{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

    #[test]
    fn schemas_that_read_data_differently_get_different_ids() {
        let reg = Registry::build(vec![Source {
            subject: "t-value".into(),
            compatibility: "NONE",
            schemas: vec![MILLIS, MICROS],
            pinned_id: None,
        }])
        .unwrap();
        let v = reg.versions("t-value").unwrap();
        assert_ne!(v[0].id, v[1].id, "logical types change the id");
        assert!(reg
            .schema_by_id(v[0].id)
            .unwrap()
            .contains("timestamp-millis"));
        assert!(reg
            .schema_by_id(v[1].id)
            .unwrap()
            .contains("timestamp-micros"));
        assert_eq!(reg.lookup("t-value", MICROS).unwrap().version, 2);
        // Both shared one Parsing Canonical Form id: it is served for neither.
        let old = legacy_id(MILLIS).unwrap();
        assert_eq!(old, legacy_id(MICROS).unwrap());
        assert!(reg.schema_by_id(old).is_none());

        let defaults = |d: &str| {
            format!(
                r#"{{"type":"record","name":"E","fields":[{{"name":"n","type":"long","default":{d}}}]}}"#
            )
        };
        assert_ne!(
            derived_id(&identity_form(&defaults("1")).unwrap()),
            derived_id(&identity_form(&defaults("2")).unwrap()),
            "defaults change the id"
        );
        let with_doc = V1.replace(r#""name":"O","#, r#""name":"O","doc":"d","#);
        assert_eq!(identity_form(&with_doc), identity_form(V1), "docs do not");
    }

    #[test]
    fn an_unambiguous_legacy_id_still_serves_its_schema() {
        let reg = Registry::build(vec![Source {
            subject: "t-value".into(),
            compatibility: "NONE",
            schemas: vec![MILLIS],
            pinned_id: None,
        }])
        .unwrap();
        let old = legacy_id(MILLIS).unwrap();
        assert!(reg.schema_by_id(old).unwrap().contains("timestamp-millis"));
        assert_eq!(
            reg.legacy_ids().collect::<Vec<_>>(),
            vec![(old, reg.versions("t-value").unwrap()[0].id)]
        );
    }

    #[test]
    fn pinned_ids_win_and_collisions_are_errors() {
        let reg = Registry::build(vec![Source {
            subject: "a-value".into(),
            compatibility: "FULL",
            schemas: vec![V1],
            pinned_id: Some(42),
        }])
        .unwrap();
        assert_eq!(reg.versions("a-value").unwrap()[0].id, 42);
        let clash = Registry::build(vec![
            Source {
                subject: "a-value".into(),
                compatibility: "FULL",
                schemas: vec![V1],
                pinned_id: Some(7),
            },
            Source {
                subject: "b-value".into(),
                compatibility: "FULL",
                schemas: vec![V2],
                pinned_id: Some(7),
            },
        ]);
        assert!(clash.unwrap_err()[0]
            .1
            .contains("schema id 7 is already used"));
    }
}
