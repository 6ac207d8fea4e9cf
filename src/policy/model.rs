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

/// A validity rule: a SQL-style predicate, or `cel: <expression>`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RuleDoc {
    Sql(String),
    Cel { cel: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingDoc {
    pub topics: NamingTopicsDoc,
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
