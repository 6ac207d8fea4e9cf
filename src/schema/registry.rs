//! The built-in schema registry: the Avro schemas of the contracts, served with Confluent's
//! registry API under `/registry/` on the admin port, so producers using Confluent serializers can
//! point at meshgate.
//!
//! - **Subjects** follow TopicNameStrategy: a contract on topic `T` is subject `T-value`.
//! - **Versions** are the contract's `schema.history` files (oldest first) and then its current
//!   schema: versions 1..=n.
//! - **Ids** are derived from the schema itself, so every gateway instance and every restart gives
//!   the same id: FNV-1a (64-bit) of the schema's Avro Parsing Canonical Form, folded into
//!   1..=2^31-1. A contract may pin the id of its current schema with `schema.id` (to match an
//!   existing registry). Two different schemas that land on one id are a load error that names
//!   both; pinning one resolves it.
//! - Only `format: avro` contracts are served; the registry is read-only (lookups only).

use std::collections::{BTreeMap, HashMap};

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

pub fn canonical(text: &str) -> Result<String, String> {
    apache_avro::Schema::parse_str(text)
        .map(|s| s.canonical_form())
        .map_err(|e| e.to_string())
}

impl Registry {
    /// Builds the registry; errors are (subject, message).
    pub fn build(sources: Vec<Source<'_>>) -> Result<Registry, Vec<(String, String)>> {
        let mut reg = Registry::default();
        let mut errors = Vec::new();
        let mut id_owner: HashMap<u32, String> = HashMap::new();
        for src in sources {
            let mut versions = Vec::new();
            let last = src.schemas.len().saturating_sub(1);
            for (i, text) in src.schemas.iter().enumerate() {
                let canonical = match canonical(text) {
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
        if errors.is_empty() {
            Ok(reg)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// The schema text for `id`.
    pub fn schema_by_id(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
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
        let wanted = canonical(text).ok()?;
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
    fn ids_are_derived_from_the_canonical_form_and_versions_follow_history() {
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
        assert_eq!(versions[0].id, derived_id(&canonical(V1).unwrap()));
        // Same schema, different whitespace: same id, found by lookup.
        let spaced = V1.replace(',', ", ");
        assert_eq!(reg.lookup("shop.o.v1-value", &spaced).unwrap().version, 1);
        assert!(reg
            .lookup("shop.o.v1-value", r#"{"type":"string"}"#)
            .is_none());
        assert!(reg.schema_by_id(versions[1].id).unwrap().contains("\"n\""));
        // The derivation is fixed: this is what every instance computes for V1.
        assert_eq!(derived_id("{\"name\":\"shop.O\",\"type\":\"record\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"}]}"), versions[0].id);
        assert!((1..=0x7fff_ffff).contains(&versions[0].id));
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
