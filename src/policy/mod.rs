//! Policies: the YAML files in the policy directory, compiled once into an immutable
//! [`PolicySet`], and judged against requests without I/O.
//!
//! - [`model`]: the files as written (serde, unknown keys refused).
//! - [`load`]: directory walk, parse, compile: every error as `file:line: message`.
//! - [`judge`]: produce and create-topic verdicts. Pure: no I/O, no locks, no allocation per
//!   record beyond what decoding a JSON value needs.
//! - [`store`]: the current set behind an `ArcSwap`, hot reload, and reload metrics.

pub mod access;
pub mod cases;
pub mod evolution;
pub mod judge;
pub mod load;
pub mod mode;
pub mod model;
pub mod odcs;
pub mod protect;
pub mod sli;
pub mod zone;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use mode::Mode;

use crate::protocol::records::Codec;
use crate::rules::Rule;
use crate::schema::json::JsonCheck;
use crate::schema::shape::Shape;
pub use model::{Compatibility, Format};

/// Where a policy element was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A policy file problem, at `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: u64,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// `classification:`: the levels, and which field names must be classified.
#[derive(Debug)]
pub struct Classification {
    pub levels: Vec<String>,
    /// (field-name regex, required level, where).
    pub require: Vec<(Regex, Option<String>, Origin)>,
    pub origin: Origin,
}

/// The classification levels when no policy names them.
pub const DEFAULT_LEVELS: &[&str] = &["pii"];

impl ContractSchema {
    /// The classification of the field at `path`, if it has one.
    pub fn classification_of(&self, path: &str) -> Option<&str> {
        self.classified
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, l, _)| l.as_str())
    }
}

/// The principal of a client that has not authenticated, as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Every policy in force, compiled.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub naming: Option<Naming>,
    pub topics: Option<TopicRules>,
    pub produce: Vec<ProduceRule>,
    pub classification: Option<Classification>,
    pub contracts: Vec<Arc<Contract>>,
    by_topic: HashMap<String, usize>,
    /// Files the set was loaded from.
    pub files: Vec<String>,
    /// SHA-256 (hex) of what the set was compiled from: each policy file's path relative to the
    /// policy directory and its text, then each contract's schema text and history. Gateways that
    /// load the same files report the same hash, wherever their directory is.
    pub content_hash: String,
    /// The built-in schema registry: the Avro contracts' schemas.
    pub registry: crate::schema::registry::Registry,
    /// Whether any contract in force restricts who reads (`consumers:`): only then are the
    /// consuming APIs read whole and judged.
    pub restricts_consumers: bool,
    /// The contracts in force that protect fields (`protect:`), by index: a Fetch looks only at
    /// these, and only when there are some.
    pub protecting: Vec<usize>,
    /// The principals contracts name (`producers:`, `consumers:`): the chargeback's principal
    /// labels (any other is `_other`).
    pub named_principals: std::collections::HashSet<Box<str>>,
    /// `access.hide_unauthorized_topics`: where it was set, when it is.
    pub hide_unauthorized_topics: Option<Origin>,
    /// ODCS documents that name no Kafka topic: loaded and listed, not enforced.
    pub odcs_unenforced: Vec<(Origin, odcs::OdcsInfo)>,
    /// Partner zones.
    pub zones: Vec<Arc<zone::Zone>>,
    /// Every registered schema by id, parsed: the writer schemas Avro records may name.
    pub avro_writers: HashMap<u32, Arc<crate::schema::avro_data::AvroSchema>>,
}

/// A naming pattern and the patterns exempt from it.
pub type NamePattern = (Regex, Vec<Regex>);

#[derive(Debug)]
pub struct Naming {
    pub pattern: Regex,
    pub exempt: Vec<Regex>,
    /// `groups:`: the pattern consumer group ids must match, and its exemptions.
    pub groups: Option<NamePattern>,
    /// `client_ids:`: the pattern client ids must match, and its exemptions.
    pub client_ids: Option<NamePattern>,
    pub origin: Origin,
    pub mode: Mode,
}

impl Naming {
    pub fn is_exempt(&self, topic: &str) -> bool {
        self.exempt.iter().any(|r| r.is_match(topic))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl Range {
    pub fn contains(&self, v: i64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    pub fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (Some(a), Some(b)) => write!(f, "between {a} and {b}"),
            (Some(a), None) => write!(f, "at least {a}"),
            (None, Some(b)) => write!(f, "at most {b}"),
            (None, None) => write!(f, "anything"),
        }
    }
}

#[derive(Debug)]
pub struct TopicRules {
    pub partitions: Range,
    pub replication_factor: Range,
    pub configs: Vec<ConfigRule>,
    pub require_contract: bool,
    pub origin: Origin,
    pub mode: Mode,
}

#[derive(Debug)]
pub struct ConfigRule {
    pub key: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub allowed: Option<Vec<String>>,
    pub origin: Origin,
}

#[derive(Debug)]
pub struct ProduceRule {
    /// Topics it applies to; `None` for every topic.
    pub topics: Option<Regex>,
    /// Required acks: -1 (all) or 1.
    pub acks: Option<i16>,
    pub compression: Option<Vec<Codec>>,
    pub idempotence_required: bool,
    pub headers: Vec<String>,
    pub key_required: bool,
    pub max_record_bytes: Option<usize>,
    pub origin: Origin,
    pub mode: Mode,
}

impl ProduceRule {
    pub fn applies_to(&self, topic: &str) -> bool {
        self.topics.as_ref().is_none_or(|r| r.is_match(topic))
    }

    /// True when the rule needs to look at individual records.
    pub fn inspects_records(&self) -> bool {
        !self.headers.is_empty() || self.key_required || self.max_record_bytes.is_some()
    }
}

/// A data product's contract.
#[derive(Debug)]
pub struct Contract {
    pub name: String,
    pub owner: String,
    pub topic: String,
    pub description: Option<String>,
    pub schema: Option<ContractSchema>,
    pub sla: Sla,
    pub completeness_target: Option<f64>,
    pub rules: Vec<ContractRule>,
    pub origin: Origin,
    /// Where `topic:` was written.
    pub topic_origin: Origin,
    /// Top-level fields that are neither optional nor nullable (for completeness).
    pub required_fields: Vec<Box<str>>,
    /// Its position in `PolicySet::contracts` (for the handles a `Generation` keeps beside it).
    pub index: usize,
    /// For `format: json` with an Avro record schema and SQL rules: the one-pass projection that
    /// judges valid records without a `serde_json::Value` tree.
    pub json_projection: Option<crate::schema::json_project::JsonProjection>,
    /// For `format: avro`: the decoders for its records, per writer schema.
    pub avro_reader: Option<crate::schema::avro_data::AvroReader>,
    /// `producers:`: the principals allowed to produce to `topic`; empty means anyone.
    pub producers: Vec<Box<str>>,
    /// The mode of the contract's own checks (producers, schema) and of rules without their own.
    pub mode: Mode,
    /// `on_reject:`: where its refused records go.
    pub on_reject: Option<OnReject>,
    /// `consumers:`: who may read the topic, and with which groups; anyone when `None`.
    pub consumers: Option<Consumers>,
    /// `owner`, shared: the chargeback's team label.
    pub team: Arc<str>,
    /// For a contract loaded from an ODCS document: its identity there, and what of it is not
    /// enforced.
    pub odcs: Option<Box<odcs::OdcsInfo>>,
    /// Quality rules measured over a window (ODCS), never refusing a record.
    pub slis: Vec<sli::Sli>,
    /// `protect:`, `pii_readers:`, `mask_on_fetch:`: its classified fields' protection.
    pub protect: Option<Arc<protect::Protect>>,
}

/// A contract's `consumers:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consumers {
    /// The principals that may read the topic; any principal when empty (only groups listed).
    pub principals: Vec<Box<str>>,
    /// The consumer groups that may commit and fetch offsets of the topic; any group when empty.
    pub groups: Vec<GroupPattern>,
}

/// `Group:name` (literal) or `Group:prefix*` (prefixed, as Kafka's PREFIXED ACLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPattern {
    Literal(Box<str>),
    Prefix(Box<str>),
}

impl GroupPattern {
    pub fn parse(text: &str) -> Self {
        match text.strip_suffix('*') {
            Some(prefix) => GroupPattern::Prefix(prefix.into()),
            None => GroupPattern::Literal(text.into()),
        }
    }

    pub fn matches(&self, group: &str) -> bool {
        match self {
            GroupPattern::Literal(g) => **g == *group,
            GroupPattern::Prefix(p) => group.starts_with(&**p),
        }
    }
}

impl std::fmt::Display for GroupPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupPattern::Literal(g) => write!(f, "Group:{g}"),
            GroupPattern::Prefix(p) => write!(f, "Group:{p}*"),
        }
    }
}

impl Consumers {
    /// Whether `principal` may read (any principal when none is listed).
    pub fn admits(&self, principal: &str) -> bool {
        self.principals.is_empty() || self.principals.iter().any(|p| **p == *principal)
    }

    /// Whether `group` may hold offsets of the topic (any group when none is listed).
    pub fn admits_group(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g.matches(group))
    }
}

/// A contract's dead-letter topic, and how a producer is answered when its records go there.
#[derive(Debug, Clone, PartialEq)]
pub struct OnReject {
    pub dead_letter: Arc<str>,
    pub respond: Respond,
    pub max_records_per_second: u64,
    pub max_bytes_per_second: u64,
}

impl OnReject {
    pub const DEFAULT_RECORDS_PER_SECOND: u64 = 1000;
    pub const DEFAULT_BYTES_PER_SECOND: u64 = 10 << 20;
}

/// `on_reject.respond`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Respond {
    /// The producer gets INVALID_RECORD, as without a dead-letter topic.
    Error,
    /// meshgate acknowledges the partition itself, once its records are in the dead-letter topic
    /// (not for idempotent or transactional batches: see `proxy::dead_letter`).
    Success,
}

#[derive(Debug)]
pub struct ContractSchema {
    pub format: Format,
    pub version: Option<String>,
    pub compatibility: Compatibility,
    /// The schema document as text (JSON).
    pub text: String,
    pub shape: Option<Shape>,
    /// For `format: json`: how each value is checked.
    pub json: Option<JsonCheck>,
    /// Earlier versions of the schema as text, oldest first (`history:`).
    pub history: Vec<String>,
    /// The built-in registry id pinned for the current schema.
    pub pinned_id: Option<u32>,
    /// For `format: avro`: the schema, parsed for decoding and compatibility checks.
    pub avro: Option<Arc<crate::schema::avro_data::AvroSchema>>,
    /// (field path, level, where it was written): the schema's annotations and the `schema:`
    /// section's `classification:` map.
    pub classified: Vec<(String, String, Origin)>,
    pub origin: Origin,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sla {
    /// Fraction in 0..=1.
    pub availability: Option<f64>,
    pub latency_p99: Option<Duration>,
    pub freshness: Option<Duration>,
}

#[derive(Debug)]
pub struct ContractRule {
    pub rule: Rule,
    pub origin: Origin,
    /// Its own mode, or the contract's.
    pub mode: Mode,
}

/// One rule in force, as the catalog lists it: the `policy` and `rule` labels its refusals
/// (and would-rejects) carry, and its mode.
#[derive(Debug)]
pub struct RuleInForce<'a> {
    pub policy: &'static str,
    pub rule: String,
    pub mode: &'a Mode,
    /// The data product it belongs to, for contract rules.
    pub contract: Option<&'a Contract>,
    pub origin: &'a Origin,
}

impl PolicySet {
    /// Whether any contract in force protects fields.
    pub fn protects(&self) -> bool {
        !self.protecting.is_empty()
    }

    /// Every rule in force, with the labels its refusals carry: naming, require_contract and the
    /// topic rules, the produce rules, then each contract's producers, schema and validity rules.
    pub fn rules_in_force(&self) -> Vec<RuleInForce<'_>> {
        let mut out = Vec::new();
        let mut push = |policy, rule: String, mode, contract, origin| {
            out.push(RuleInForce {
                policy,
                rule,
                mode,
                contract,
                origin,
            })
        };
        if let Some(n) = &self.naming {
            push(
                "naming",
                n.pattern.as_str().to_string(),
                &n.mode,
                None,
                &n.origin,
            );
        }
        if let Some(t) = &self.topics {
            let o = &t.origin;
            if t.require_contract {
                push(
                    "require_contract",
                    "require_contract".into(),
                    &t.mode,
                    None,
                    o,
                );
            }
            if t.partitions.is_set() {
                push("topics", "partitions".into(), &t.mode, None, o);
            }
            if t.replication_factor.is_set() {
                push("topics", "replication_factor".into(), &t.mode, None, o);
            }
            for c in &t.configs {
                push("topics", c.key.clone(), &t.mode, None, &c.origin);
            }
        }
        for r in &self.produce {
            let o = &r.origin;
            let keys = [
                ("acks", r.acks.is_some()),
                ("compression", r.compression.is_some()),
                ("idempotence", r.idempotence_required),
                ("headers", !r.headers.is_empty()),
                ("key", r.key_required),
                ("max_record_bytes", r.max_record_bytes.is_some()),
            ];
            for (key, set) in keys {
                if set {
                    push("produce", key.into(), &r.mode, None, o);
                }
            }
        }
        for c in &self.contracts {
            if !c.producers.is_empty() {
                push("producers", "producers".into(), &c.mode, Some(c), &c.origin);
            }
            if c.schema.is_some() {
                push("contract", "schema".into(), &c.mode, Some(c), &c.origin);
            }
            for r in &c.rules {
                push("contract", r.rule.text.clone(), &r.mode, Some(c), &r.origin);
            }
        }
        out
    }
}

impl Contract {
    /// Where a producer reads about the contract: `file:line; version V; /catalog#name`. Part of
    /// every refusal message, in this shape, so that a producer team can act on it.
    pub fn reference(&self) -> String {
        format!("{}{}", self.origin, self.version_and_link())
    }

    /// `; version V; /catalog#name` (the version when the schema has one).
    pub fn version_and_link(&self) -> String {
        match self.schema.as_ref().and_then(|s| s.version.as_deref()) {
            Some(v) => format!("; version {v}; /catalog#{}", self.name),
            None => format!("; /catalog#{}", self.name),
        }
    }

    /// Whether any of its record checks (schema, validity rules) is judged: not all `off`.
    pub fn judges_records(&self) -> bool {
        !self.mode.is_off() || self.rules.iter().any(|r| !r.mode.is_off())
    }
}

impl PolicySet {
    /// The contract that governs `topic`.
    pub fn contract_for(&self, topic: &str) -> Option<&Arc<Contract>> {
        self.by_topic.get(topic).map(|&i| &self.contracts[i])
    }

    /// True when any policy may reject a produce request, so Produce must be decoded.
    pub fn governs_produce(&self) -> bool {
        self.naming.is_some()
            || self.names_client_ids()
            || self.topics.as_ref().is_some_and(|t| t.require_contract)
            || !self.produce.is_empty()
            || !self.contracts.is_empty()
    }

    /// True when any policy may reject a CreateTopics request.
    pub fn governs_create_topics(&self) -> bool {
        self.naming.is_some() || self.topics.is_some()
    }
}

/// Kafka's rule for a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
pub fn is_valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
