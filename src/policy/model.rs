//! The policy files exactly as written: serde structs with unknown keys refused, and spans kept
//! where a later check may need to point at a line. Nothing here is interpreted; `compile` does
//! that.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// One YAML document of a policy file. It holds one or more of the top-level keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub contract: Option<Spanned<ContractDoc>>,
    pub naming: Option<Spanned<NamingDoc>>,
    pub topics: Option<Spanned<TopicsDoc>>,
    pub produce: Option<Vec<Spanned<ProduceRuleDoc>>>,
    pub classification: Option<Spanned<ClassificationDoc>>,
    pub access: Option<Spanned<AccessDoc>>,
    pub zone: Option<Spanned<ZoneDoc>>,
}

/// `zone:`: a partner zone, its own listener sharing chosen topics under aliases, read-only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneDoc {
    pub name: Spanned<String>,
    /// The zone's bootstrap address (`HOST:PORT`); broker `n` is served at
    /// `broker_port_base + n` (default: the listen port + 1).
    pub listen: Spanned<String>,
    #[serde(default)]
    pub broker_port_base: Option<u16>,
    /// The host written into the broker addresses the zone hands out (default: the gateway's).
    #[serde(default)]
    pub advertised_host: Option<String>,
    /// The zone's own TLS identity (paths relative to the policy file); with `client_ca`, the
    /// partner's principals come from its client certificates.
    #[serde(default)]
    pub tls: Option<Spanned<ZoneTlsDoc>>,
    /// The partner's principals; no other principal is served on the zone's listener.
    pub principals: Spanned<Vec<Spanned<String>>>,
    /// Prefix of the zone's consumer groups on the cluster (default `zone.<name>.`).
    #[serde(default)]
    pub group_prefix: Option<Spanned<String>>,
    pub shares: Spanned<Vec<Spanned<ShareDoc>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneTlsDoc {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub client_ca: Option<String>,
}

/// One shared topic: `{topic: orders.order-events.v1, as: partner-acme.orders}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDoc {
    pub topic: String,
    /// The name the partner sees (default: the topic's own name).
    #[serde(default, rename = "as")]
    pub alias: Option<String>,
    /// Whether the partner may produce to it (default: read-only). Its records are judged by the
    /// topic's contract and the produce rules, as any producer's.
    #[serde(default)]
    pub produce: bool,
}

/// `access:`: gateway-wide read-access settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessDoc {
    /// Leave out of a principal's Metadata answers the contract topics it may neither produce
    /// to nor read.
    #[serde(default)]
    pub hide_unauthorized_topics: bool,
}

/// `classification:`: the levels fields may be classified at, and which fields must be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationDoc {
    /// Default: `[pii]`.
    #[serde(default)]
    pub levels: Option<Vec<String>>,
    #[serde(default)]
    pub require: Vec<Spanned<RequireDoc>>,
}

/// Every field whose name matches `fields` (a regex over the field's own name, anchored) must be
/// classified, at `level` when given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireDoc {
    pub fields: String,
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractDoc {
    pub name: Spanned<String>,
    pub owner: String,
    pub topic: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Spanned<SchemaDoc>>,
    #[serde(default)]
    pub sla: Option<Spanned<SlaDoc>>,
    #[serde(default)]
    pub quality: Option<QualityDoc>,
    /// The principals allowed to produce to the topic (`User:orders-svc`); anyone when absent.
    #[serde(default)]
    pub producers: Option<Spanned<Vec<Spanned<String>>>>,
    /// The mode of the contract's checks and of its rules that do not set their own.
    #[serde(default)]
    pub mode: Option<Spanned<ModeDoc>>,
    #[serde(default)]
    pub canary: Option<Spanned<CanaryDoc>>,
    /// Who may read the topic: principals (`User:analytics`) and consumer groups
    /// (`Group:orders-*`); anyone when absent.
    #[serde(default)]
    pub consumers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Where refused records go: `{dead_letter: TOPIC, respond: error | success, bounds}`.
    #[serde(default)]
    pub on_reject: Option<Spanned<OnRejectDoc>>,
    /// What happens to classified fields: `{pii: encrypt | require_encrypted,
    /// deterministic: [field, ...]}` (see `policy::protect`).
    #[serde(default)]
    pub protect: Option<Spanned<super::protect::ProtectDoc>>,
    /// The principals that read protected fields in plaintext.
    #[serde(default)]
    pub pii_readers: Option<Spanned<Vec<Spanned<String>>>>,
    /// What other readers see in place of a protected field: a text (`"***"`) or `hash`.
    #[serde(default)]
    pub mask_on_fetch: Option<Spanned<String>>,
}

/// `on_reject:` of a contract.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnRejectDoc {
    pub dead_letter: String,
    /// `error` (the default) or `success`.
    #[serde(default)]
    pub respond: Option<String>,
    /// Records dead-lettered per second at most (default 1000); past it, refused as usual.
    #[serde(default)]
    pub max_records_per_second: Option<u64>,
    /// Record bytes dead-lettered per second at most (default 10 MiB).
    #[serde(default)]
    pub max_bytes_per_second: Option<u64>,
}

/// `mode:` of a rule or a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeDoc {
    Enforce,
    Shadow,
    Off,
    Canary,
}

/// `canary:` beside `mode: canary`: who the rule is enforced for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryDoc {
    /// Principals it is enforced for (`User:orders-svc`).
    #[serde(default)]
    pub principals: Vec<String>,
    /// The share of the other principals it is enforced for, 0 to 100, by a stable hash.
    #[serde(default)]
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Avro,
    Json,
}

/// A contract's schema compatibility level: the checker's own type, so the two cannot drift.
pub use crate::schema::avro_compat::Level as Compatibility;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaDoc {
    pub format: Format,
    #[serde(default)]
    pub version: Option<Spanned<String>>,
    #[serde(default)]
    pub compatibility: Option<Compatibility>,
    /// Path of the schema file, relative to the policy file.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// The schema inline: a JSON string, or the schema written as YAML.
    #[serde(default)]
    pub definition: Option<Spanned<serde_json::Value>>,
    /// Earlier versions of the schema, oldest first (files, relative to the policy file), for the
    /// `*_transitive` compatibility levels of `meshgate check --against`.
    #[serde(default)]
    pub history: Vec<Spanned<String>>,
    /// Pins the built-in registry id of the current schema (default: derived from the schema).
    #[serde(default)]
    pub id: Option<u32>,
    /// Field path → classification level, beside the schema's own annotations.
    #[serde(default)]
    pub classification: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaDoc {
    /// A percentage, e.g. `99.9%`.
    #[serde(default)]
    pub availability: Option<Spanned<String>>,
    /// A duration, e.g. `1000ms`, `2s`.
    #[serde(default)]
    pub latency_p99: Option<Spanned<String>>,
    /// A duration, e.g. `60s`, `5m`.
    #[serde(default)]
    pub freshness: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityDoc {
    #[serde(default)]
    pub completeness: Option<Spanned<String>>,
    #[serde(default)]
    pub validity_rules: Vec<Spanned<RuleDoc>>,
}

/// A validity rule: a SQL-style predicate, or a mapping with `rule:` (SQL) or `cel:`, and
/// optionally its own `mode:` (and `canary:`).
///
/// Deserialized by hand rather than as an untagged enum: an untagged enum buffers the YAML and
/// guesses scalar types first (`mode: off` would become `false`), and it reports every mistake as
/// "did not match any variant" instead of naming the unknown key.
#[derive(Debug)]
pub enum RuleDoc {
    Sql(String),
    Full(RuleFullDoc),
}

impl<'de> Deserialize<'de> for RuleDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RuleDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rule (text), or a mapping with `rule:` or `cel:` and `mode:`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RuleDoc, E> {
                Ok(RuleDoc::Sql(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RuleDoc, A::Error> {
                RuleFullDoc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RuleDoc::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFullDoc {
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub cel: Option<String>,
    #[serde(default)]
    pub mode: Option<ModeDoc>,
    #[serde(default)]
    pub canary: Option<CanaryDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingDoc {
    pub topics: NamingTopicsDoc,
    /// Consumer group ids: `{pattern, exempt}`, as for topics.
    #[serde(default)]
    pub groups: Option<NamingTopicsDoc>,
    /// Client ids (the request header's `client.id`): `{pattern, exempt}`.
    #[serde(default)]
    pub client_ids: Option<NamingTopicsDoc>,
    #[serde(default)]
    pub mode: Option<Spanned<ModeDoc>>,
    #[serde(default)]
    pub canary: Option<Spanned<CanaryDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingTopicsDoc {
    pub pattern: Spanned<String>,
    #[serde(default)]
    pub exempt: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsDoc {
    #[serde(default)]
    pub partitions: Option<Spanned<RangeDoc>>,
    #[serde(default)]
    pub replication_factor: Option<Spanned<RangeDoc>>,
    #[serde(default)]
    pub configs: BTreeMap<String, Spanned<ConfigRuleDoc>>,
    #[serde(default)]
    pub require_contract: Option<bool>,
    #[serde(default)]
    pub mode: Option<Spanned<ModeDoc>>,
    #[serde(default)]
    pub canary: Option<Spanned<CanaryDoc>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeDoc {
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigRuleDoc {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub allowed: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceRuleDoc {
    /// A regex over topic names; absent means every topic.
    #[serde(default)]
    pub topics: Option<Spanned<String>>,
    #[serde(default)]
    pub acks: Option<Spanned<AcksDoc>>,
    #[serde(default)]
    pub compression: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub idempotence: Option<Requirement>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub key: Option<Requirement>,
    #[serde(default)]
    pub max_record_bytes: Option<u64>,
    #[serde(default)]
    pub mode: Option<Spanned<ModeDoc>>,
    #[serde(default)]
    pub canary: Option<Spanned<CanaryDoc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AcksDoc {
    Word(String),
    Number(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    Required,
    Optional,
}
