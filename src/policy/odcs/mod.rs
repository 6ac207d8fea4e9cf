//! Open Data Contract Standard (ODCS) v3 documents, loaded as contracts.
//!
//! A policy file whose documents carry `kind: DataContract` (or `apiVersion:`) is read here
//! instead of as meshgate's own keys. Each document is
//! 1. validated against the standard's JSON Schema (`odcs-json-schema-v3.1.0.json`, copied from
//!    bitol-io/open-data-contract-standard with its Apache-2.0 licence), each violation reported
//!    at the line of the element it names;
//! 2. mapped onto a meshgate [`ContractDoc`](crate::policy::model::ContractDoc), which then
//!    compiles exactly as a `contract:` does: an ODCS contract and the equivalent `contract:` are
//!    judged by the same code, so they give the same verdicts (a property test checks it);
//! 3. every element meshgate cannot enforce is listed as [`NotEnforced`], with the reason, for
//!    `meshgate check --explain` and `/catalog`. Nothing is dropped silently.
//!
//! The mapping, element by element, is README's "ODCS" table; the decisions it rests on are in
//! the doc comments below.

pub mod export;
pub mod node;

use std::sync::OnceLock;

use serde_saphyr::Spanned;

use crate::policy::model::{ContractDoc, QualityDoc, RuleDoc, RuleFullDoc, SchemaDoc, SlaDoc};
use crate::policy::model::{Format, ModeDoc};
use crate::policy::sli::{Op, Unit};
pub use node::Node;

/// The ODCS JSON Schema, compiled once per process (it is a constant).
fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("odcs-json-schema-v3.1.0.json"))
                .expect("the bundled ODCS schema is JSON");
        jsonschema::validator_for(&schema).expect("the bundled ODCS schema compiles")
    })
}

/// Whether a parsed YAML document is ODCS: `kind: DataContract`, or an `apiVersion:` key (which
/// meshgate's own documents never have).
pub fn is_odcs(doc: &Node) -> bool {
    doc.get("apiVersion").is_some() || doc.text_at("kind").as_deref() == Some("DataContract")
}

/// An ODCS element meshgate reads but does not enforce, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NotEnforced {
    /// Where in the document, as a path (`schema[0].properties[2].quality[0]`).
    pub element: String,
    pub line: u64,
    pub reason: String,
}

/// What an ODCS contract adds to a meshgate contract: its identity in the standard and what of it
/// is not enforced.
#[derive(Debug, Clone, Default)]
pub struct OdcsInfo {
    pub id: String,
    pub api_version: String,
    /// `name:` (the contract is named by it, else by `id`).
    pub title: Option<String>,
    pub version: Option<String>,
    pub status: Option<String>,
    pub domain: Option<String>,
    pub data_product: Option<String>,
    /// `team.members[].username`.
    pub members: Vec<String>,
    pub not_enforced: Vec<NotEnforced>,
}

/// A quality rule that needs a window (a count over many records) rather than a verdict per
/// record: measured and reported, never a reason to refuse a record.
#[derive(Debug, Clone, PartialEq)]
pub struct SliDoc {
    pub id: String,
    pub kind: SliKindDoc,
    pub target: Vec<(Op, f64)>,
    pub unit: Unit,
    pub line: u64,
    pub element: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SliKindDoc {
    /// Records that break `predicate` (SQL, over one record), counted.
    Bad { metric: String, predicate: String },
    /// Records accepted per window.
    RowCount,
    /// Records whose values of these fields repeat an earlier record's.
    Duplicates(Vec<String>),
}

/// What one ODCS document becomes.
#[derive(Debug)]
pub enum Mapped {
    /// A contract, to compile like a `contract:`.
    Contract(Box<MappedContract>),
    /// A document that names no Kafka topic (a table's contract, say): loaded and listed, not
    /// enforced.
    NoTopic(Box<OdcsInfo>),
}

#[derive(Debug)]
pub struct MappedContract {
    pub doc: ContractDoc,
    pub info: OdcsInfo,
    pub slis: Vec<SliDoc>,
}

/// Validates one ODCS document against the standard's JSON Schema: each violation as
/// (line, message).
pub fn validate(root: &Spanned<Node>) -> Vec<(u64, String)> {
    let json = root.value.to_json();
    let mut out: Vec<(u64, String)> = validator()
        .iter_errors(&json)
        .map(|e| {
            let pointer = e.instance_path().as_str().to_string();
            let at = if pointer.is_empty() {
                "the document".to_string()
            } else {
                format!("`{pointer}`")
            };
            (line_of(root, &pointer), format!("ODCS: {at}: {e}"))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn line_of(root: &Spanned<Node>, pointer: &str) -> u64 {
    node::line_at(root, pointer)
}

/// `Spanned` at a node's place.
fn at<T>(value: T, node: &Spanned<Node>) -> Spanned<T> {
    Spanned::new(value, node.referenced, node.defined)
}

/// Maps a validated ODCS document. `levels` are the policy set's classification levels: a
/// property classified at another level (ODCS examples use `public`, `restricted`) is listed as
/// not enforced rather than refused.
pub fn map(root: &Spanned<Node>, levels: &[String]) -> Result<Mapped, Vec<(u64, String)>> {
    let doc = &root.value;
    let mut m = Mapper {
        notes: Vec::new(),
        errors: Vec::new(),
    };
    let api_version = doc.text_at("apiVersion").unwrap_or_default();
    if !api_version.starts_with("v3.") {
        return Err(vec![(
            doc.get("apiVersion")
                .map_or(root.referenced.line(), |n| n.referenced.line()),
            format!("ODCS: apiVersion `{api_version}`: meshgate reads ODCS v3.x documents"),
        )]);
    }
    let mut info = OdcsInfo {
        id: doc.text_at("id").unwrap_or_default(),
        api_version,
        title: doc.text_at("name"),
        version: doc.text_at("version"),
        status: doc.text_at("status"),
        domain: doc.text_at("domain"),
        data_product: doc.text_at("dataProduct"),
        ..OdcsInfo::default()
    };
    let team = doc.get("team");
    let members: &[Spanned<Node>] = match team.map(|t| &t.value) {
        Some(Node::Seq(items)) => items,
        Some(t) => t.items_at("members"),
        None => &[],
    };
    info.members = members
        .iter()
        .filter_map(|m| m.value.text_at("username"))
        .collect();

    // The topic, and the schema object that describes its records.
    let servers = doc.items_at("servers");
    let kafka = servers
        .iter()
        .enumerate()
        .find(|(_, s)| s.value.text_at("type").as_deref() == Some("kafka"));
    for (i, s) in servers.iter().enumerate() {
        if kafka.is_some_and(|(k, _)| k == i) {
            continue;
        }
        let kind = s.value.text_at("type").unwrap_or_default();
        m.note(
            format!("servers[{i}]"),
            s,
            format!("a `{kind}` server: meshgate governs Kafka topics only"),
        );
    }
    let objects = doc.items_at("schema");
    let topic_objects: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.value.text_at("physicalType").as_deref() == Some("topic"))
        .map(|(i, _)| i)
        .collect();
    let chosen = match topic_objects.first() {
        Some(&i) => Some(i),
        None if objects.len() == 1 && (kafka.is_some() || servers.is_empty()) => Some(0),
        None => None,
    };
    let custom_topic = kafka
        .and_then(|(_, s)| custom_property(&s.value, "topic"))
        .or_else(|| custom_property(doc, "topic"));
    let topic: Option<(String, &Spanned<Node>)> = custom_topic.or_else(|| {
        let o = &objects[chosen?];
        let name = o
            .value
            .get("physicalName")
            .or_else(|| o.value.get("name"))?;
        Some((name.value.text()?, name))
    });
    for (i, o) in objects.iter().enumerate() {
        if Some(i) != chosen && chosen.is_some() {
            m.note(
                format!("schema[{i}]"),
                o,
                "one ODCS document is one contract: meshgate enforces its first topic object only"
                    .into(),
            );
        }
    }
    let Some((topic, topic_node)) = topic else {
        info.not_enforced = m.notes;
        info.not_enforced.insert(
            0,
            NotEnforced {
                element: "(document)".into(),
                line: root.referenced.line(),
                reason: "names no Kafka topic (no `kafka` server with a `topic` custom \
                         property, no schema object of physicalType `topic`): loaded, not \
                         enforced"
                    .into(),
            },
        );
        return Ok(Mapped::NoTopic(Box::new(info)));
    };

    let name_node = doc.get("name").or_else(|| doc.get("id")).unwrap_or(root);
    let name = name_node.value.text().unwrap_or_else(|| info.id.clone());
    let owner = match team.map(|t| &t.value) {
        Some(t @ Node::Map(_)) => t.text_at("name"),
        _ => None,
    }
    .or_else(|| info.domain.clone())
    .or_else(|| info.data_product.clone())
    .unwrap_or_else(|| {
        m.note(
            "team".into(),
            root,
            "no `team.name`, `domain` or `dataProduct`: the owner (and chargeback team) is `unowned`"
                .into(),
        );
        "unowned".into()
    });
    let format = match kafka
        .and_then(|(_, s)| s.value.text_at("format"))
        .as_deref()
    {
        None | Some("json") => Some(Format::Json),
        Some("avro") => Some(Format::Avro),
        Some(other) => {
            let (i, s) = kafka.expect("a format was read from it");
            m.note(
                format!("servers[{i}].format"),
                s,
                format!("format `{other}`: meshgate judges JSON and Avro records only"),
            );
            None
        }
    };

    let mut rules: Vec<Spanned<RuleDoc>> = Vec::new();
    let mut slis = Vec::new();
    let mut classification = std::collections::BTreeMap::new();
    let mut schema = None;
    if let Some(i) = chosen {
        let object = &objects[i];
        let path = format!("schema[{i}]");
        let record_name = avro_name(&object.value.text_at("name").unwrap_or("Record".into()));
        let props = object.value.items_at("properties");
        let mut fields = Vec::new();
        for (j, p) in props.iter().enumerate() {
            let ppath = format!("{path}.properties[{j}]");
            if let Some(f) = m.property(
                p,
                &ppath,
                "",
                &record_name,
                format,
                levels,
                &mut rules,
                &mut slis,
                &mut classification,
            ) {
                fields.push(f);
            }
        }
        for (k, q) in object.value.items_at("quality").iter().enumerate() {
            m.quality(
                q,
                &format!("{path}.quality[{k}]"),
                None,
                &mut rules,
                &mut slis,
            );
        }
        for key in ["relationships", "authoritativeDefinitions"] {
            if let Some(n) = object.value.get(key) {
                if key == "relationships" {
                    m.note(
                        format!("{path}.relationships"),
                        n,
                        "relationships span datasets: a gateway sees one record at a time".into(),
                    );
                } else if format == Some(Format::Avro) && object.value.get("properties").is_none() {
                    m.note(
                        format!("{path}.authoritativeDefinitions"),
                        n,
                        "the schema lives in a registry: meshgate checks records against the \
                         gateway's schema registry, not a URL in the contract"
                            .into(),
                    );
                }
            }
        }
        if let (Some(format), false) = (format, fields.is_empty()) {
            let record = serde_json::json!({
                "type": "record",
                "name": record_name,
                "fields": fields,
            });
            schema = Some(at(
                SchemaDoc {
                    format,
                    version: info.version.clone().map(|v| at(v, object)),
                    compatibility: None,
                    file: None,
                    definition: Some(at(record, object)),
                    history: Vec::new(),
                    id: None,
                    classification,
                },
                object,
            ));
        }
    }

    let (producers, consumers) = m.roles(doc);
    let sla = m.sla(doc);
    for key in ["price", "support"] {
        if let Some(n) = doc.get(key) {
            m.note(
                key.into(),
                n,
                "descriptive: shown in the catalog, nothing to enforce on the wire".into(),
            );
        }
    }
    if !m.errors.is_empty() {
        return Err(m.errors);
    }
    info.not_enforced = m.notes;
    let description = doc.get("description").and_then(|d| match &d.value {
        Node::Str(s) => Some(s.clone()),
        other => other.text_at("purpose"),
    });
    Ok(Mapped::Contract(Box::new(MappedContract {
        doc: ContractDoc {
            name: at(name, name_node),
            owner,
            topic: at(topic, topic_node),
            description,
            schema,
            sla,
            quality: (!rules.is_empty()).then_some(QualityDoc {
                completeness: None,
                validity_rules: rules,
            }),
            producers,
            mode: None,
            canary: None,
            consumers,
            on_reject: None,
            protect: None,
            pii_readers: None,
            mask_on_fetch: None,
        },
        info,
        slis,
    })))
}

/// `customProperties: [{property: KEY, value: V}]` of an element.
fn custom_property<'a>(element: &'a Node, key: &str) -> Option<(String, &'a Spanned<Node>)> {
    element
        .items_at("customProperties")
        .iter()
        .find(|c| c.value.text_at("property").as_deref() == Some(key))
        .and_then(|c| c.value.get("value"))
        .and_then(|v| Some((v.value.text()?, v)))
}

/// An Avro name from an ODCS name: letters, digits and `_`, not starting with a digit.
fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A field reference in a SQL rule: bare when it is a plain identifier, else double-quoted.
pub fn sql_field(path: &str) -> String {
    path.split('.')
        .map(|part| {
            let plain = part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if plain {
                part.to_string()
            } else {
                format!("\"{}\"", part.replace('"', "\"\""))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A literal in a SQL rule.
fn sql_literal(n: &Node) -> Option<String> {
    match n {
        Node::Str(s) => Some(format!("'{}'", s.replace('\'', "''"))),
        Node::Int(i) => Some(i.to_string()),
        Node::Float(f) => Some(f.to_string()),
        Node::Bool(b) => Some(b.to_string().to_uppercase()),
        _ => None,
    }
}

/// The operators of a quality rule or a SQL check; all must hold. (`mustNotBeBetween`, the one
/// operator that is a disjunction, is listed as not enforced by the caller.)
fn operators(q: &Node) -> Vec<(Op, f64)> {
    let mut out = Vec::new();
    for (key, op) in [
        ("mustBe", Op::Eq),
        ("mustNotBe", Op::Ne),
        ("mustBeGreaterThan", Op::Gt),
        ("mustBeGreaterOrEqualTo", Op::Ge),
        ("mustBeLessThan", Op::Lt),
        ("mustBeLessOrEqualTo", Op::Le),
    ] {
        if let Some(v) = q.get(key).and_then(|v| v.value.number()) {
            out.push((op, v));
        }
    }
    // ODCS: `mustBeBetween: [a, b]` "is the equivalent to mustBeGreaterThan and mustBeLessThan"
    // (the bounds excluded), `mustNotBeBetween` its negation.
    let pair = |key: &str| -> Option<(f64, f64)> {
        let items = q.items_at(key);
        Some((
            items.first()?.value.number()?,
            items.get(1)?.value.number()?,
        ))
    };
    if let Some((lo, hi)) = pair("mustBeBetween") {
        out.push((Op::Gt, lo));
        out.push((Op::Lt, hi));
    }
    out
}

/// Whether the operators allow a count of zero bad records and nothing more: such a rule is
/// judged per record (one bad record breaks it). Anything looser needs a window: an SLI.
fn zero_tolerance(ops: &[(Op, f64)], unit: Unit) -> bool {
    let smallest = match unit {
        Unit::Rows => 1.0,
        Unit::Percent => 1e-9,
    };
    !ops.is_empty()
        && ops.iter().all(|(op, v)| op.holds(0.0, *v))
        && !ops.iter().all(|(op, v)| op.holds(smallest, *v))
}

struct Mapper {
    notes: Vec<NotEnforced>,
    errors: Vec<(u64, String)>,
}

/// A rule's mode from its `severity`: `info` and `warning` rules are shadowed (judged, counted,
/// never refused); any other severity, or none, is enforced.
fn severity_mode(q: &Node) -> Option<ModeDoc> {
    match q.text_at("severity")?.to_ascii_lowercase().as_str() {
        "info" | "warning" | "warn" | "minor" => Some(ModeDoc::Shadow),
        _ => None,
    }
}

impl Mapper {
    fn note(&mut self, element: String, node: &Spanned<Node>, reason: String) {
        self.notes.push(NotEnforced {
            element,
            line: node.referenced.line(),
            reason,
        });
    }

    /// One property: its Avro field (None when it cannot be typed), and its rules.
    #[allow(clippy::too_many_arguments)]
    fn property(
        &mut self,
        p: &Spanned<Node>,
        path: &str,
        prefix: &str,
        parent_record: &str,
        format: Option<Format>,
        levels: &[String],
        rules: &mut Vec<Spanned<RuleDoc>>,
        slis: &mut Vec<SliDoc>,
        classification: &mut std::collections::BTreeMap<String, Spanned<String>>,
    ) -> Option<serde_json::Value> {
        let node = &p.value;
        let name = node
            .text_at("physicalName")
            .or_else(|| node.text_at("name"))
            .unwrap_or_default();
        let field = format!("{prefix}{name}");
        if let Some(c) = node.get("classification") {
            let level = c.value.text().unwrap_or_default();
            if levels.contains(&level) {
                classification.insert(field.clone(), at(level, c));
            } else {
                self.note(
                    format!("{path}.classification"),
                    c,
                    format!(
                        "`{level}` is not a classification level of this policy set (levels: {})",
                        levels.join(", ")
                    ),
                );
            }
        }
        let f = sql_field(&field);
        let mode = None;
        let mut rule = |text: String, node: &Spanned<Node>, mode: Option<ModeDoc>| {
            rules.push(at(
                RuleDoc::Full(RuleFullDoc {
                    rule: Some(text),
                    cel: None,
                    mode,
                    canary: None,
                }),
                node,
            ));
        };
        if let Some(opts) = node.get("logicalTypeOptions") {
            for key in opts.value.keys() {
                let v = opts.value.get(&key.value).expect("a key of this map");
                let bound = |op: &str| {
                    sql_literal(&v.value).map(|lit| format!("{f} IS NULL OR {f} {op} {lit}"))
                };
                let text = match key.value.as_str() {
                    "minimum" => bound(">="),
                    "maximum" => bound("<="),
                    "exclusiveMinimum" => bound(">"),
                    "exclusiveMaximum" => bound("<"),
                    "pattern" => {
                        sql_literal(&v.value).map(|lit| format!("{f} IS NULL OR {f} REGEXP {lit}"))
                    }
                    _ => None,
                };
                match text {
                    Some(t) => rule(t, v, mode),
                    None => self.note(
                        format!("{path}.logicalTypeOptions.{}", key.value),
                        v,
                        "meshgate's rule language has no check for this option".into(),
                    ),
                }
            }
        }
        for key in ["primaryKey", "unique"] {
            if node.get(key).is_some_and(|n| n.value == Node::Bool(true)) {
                self.note(
                    format!("{path}.{key}"),
                    node.get(key).expect("checked"),
                    "uniqueness spans records: declare a `duplicateValues` quality rule to \
                     measure it as an SLI"
                        .into(),
                );
            }
        }
        if let Some(n) = node.get("encryptedName") {
            self.note(
                format!("{path}.encryptedName"),
                n,
                "names a column of a store; on Kafka, classify the field instead".into(),
            );
        }
        for (k, q) in node.items_at("quality").iter().enumerate() {
            self.quality(
                q,
                &format!("{path}.quality[{k}]"),
                Some(&field),
                rules,
                slis,
            );
        }
        let logical = node.text_at("logicalType").unwrap_or_default();
        let avro = format == Some(Format::Avro);
        let ty = match logical.as_str() {
            "string" => serde_json::json!("string"),
            "integer" => serde_json::json!("long"),
            "number" => serde_json::json!("double"),
            "boolean" => serde_json::json!("boolean"),
            "date" if avro => serde_json::json!({"type": "int", "logicalType": "date"}),
            "timestamp" if avro => {
                serde_json::json!({"type": "long", "logicalType": "timestamp-millis"})
            }
            "time" if avro => serde_json::json!({"type": "int", "logicalType": "time-millis"}),
            "date" | "timestamp" | "time" => serde_json::json!("string"),
            "object" => {
                let record = format!("{parent_record}_{}", avro_name(&name));
                let mut fields = Vec::new();
                for (j, child) in node.items_at("properties").iter().enumerate() {
                    if let Some(fd) = self.property(
                        child,
                        &format!("{path}.properties[{j}]"),
                        &format!("{field}."),
                        &record,
                        format,
                        levels,
                        rules,
                        slis,
                        classification,
                    ) {
                        fields.push(fd);
                    }
                }
                serde_json::json!({"type": "record", "name": record, "fields": fields})
            }
            other => {
                self.note(
                    format!("{path}.logicalType"),
                    p,
                    format!(
                        "logicalType `{other}`: the field's type is not checked (its rules are)"
                    ),
                );
                return None;
            }
        };
        if avro_name(&name) != name {
            self.note(
                path.to_string(),
                p,
                format!("`{name}` is not an Avro field name: its type is not checked"),
            );
            return None;
        }
        let required = node
            .get("required")
            .is_some_and(|n| n.value == Node::Bool(true));
        let mut field_json = if required {
            serde_json::json!({"name": name, "type": ty})
        } else {
            serde_json::json!({"name": name, "type": ["null", ty], "default": null})
        };
        if let Some(doc) = node.text_at("description") {
            field_json["doc"] = doc.into();
        }
        if let Some(ex) = node.get("examples") {
            field_json["examples"] = ex.value.to_json();
        }
        Some(field_json)
    }

    /// One `quality` entry, on a property (`field`) or on the schema object.
    fn quality(
        &mut self,
        q: &Spanned<Node>,
        path: &str,
        field: Option<&str>,
        rules: &mut Vec<Spanned<RuleDoc>>,
        slis: &mut Vec<SliDoc>,
    ) {
        let node = &q.value;
        let metric = node.text_at("metric").or_else(|| node.text_at("rule"));
        let kind = node.text_at("type").unwrap_or_else(|| "library".into());
        let unit = match node.text_at("unit").as_deref() {
            Some("percent" | "%") => Unit::Percent,
            _ => Unit::Rows,
        };
        let ops = operators(node);
        if let Some(n) = node.get("mustNotBeBetween") {
            return self.note(
                format!("{path}.mustNotBeBetween"),
                n,
                "mustNotBeBetween (a value outside a range) is not supported: write two rules"
                    .into(),
            );
        }
        let id = node
            .text_at("id")
            .or_else(|| node.text_at("name"))
            .unwrap_or_else(|| {
                let m = metric.clone().unwrap_or_else(|| kind.clone());
                match field {
                    Some(f) => format!("{f}.{m}"),
                    None => m,
                }
            });
        let mode = severity_mode(node);
        let f = field.map(sql_field);
        // The predicate a bad record satisfies, for per-record metrics, and for library metrics
        // the rule a good record passes, written as a person would (`x IS NOT NULL`).
        let mut good: Option<String> = None;
        let bad: Option<(String, String)> = match (kind.as_str(), metric.as_deref()) {
            ("text", _) => {
                return self.note(
                    path.into(),
                    q,
                    "a `text` rule is read by people, not run".into(),
                )
            }
            ("custom", _) => {
                let engine = node.text_at("engine").unwrap_or_default();
                return self.note(
                    path.into(),
                    q,
                    format!("a custom rule for engine `{engine}` runs in that engine"),
                );
            }
            ("sql", _) => match sql_bad_predicate(node, field) {
                Ok(p) => Some(("sql".into(), p)),
                Err(why) => return self.note(path.into(), q, why),
            },
            ("library", Some("nullValues")) => f.as_ref().map(|f| {
                good = Some(format!("{f} IS NOT NULL"));
                ("nullValues".into(), format!("{f} IS NULL"))
            }),
            ("library", Some("missingValues")) => f.as_ref().map(|f| {
                let listed = node
                    .get("arguments")
                    .map_or(&[][..], |a| a.value.items_at("missingValues"));
                let null = listed.is_empty() || listed.iter().any(|v| v.value == Node::Null);
                let lits: Vec<String> = listed
                    .iter()
                    .filter_map(|v| sql_literal(&v.value))
                    .collect();
                let mut p = if null {
                    format!("{f} IS NULL")
                } else {
                    String::new()
                };
                let mut g = if null {
                    format!("{f} IS NOT NULL")
                } else {
                    String::new()
                };
                if !lits.is_empty() {
                    if !p.is_empty() {
                        p.push_str(" OR ");
                        g.push_str(" AND ");
                    } else {
                        g.push_str(&format!("{f} IS NULL OR "));
                    }
                    p.push_str(&format!("{f} IN ({})", lits.join(", ")));
                    g.push_str(&format!("{f} NOT IN ({})", lits.join(", ")));
                }
                good = Some(g);
                ("missingValues".into(), p)
            }),
            ("library", Some("invalidValues")) => {
                let args = node.get("arguments");
                let valid = args.map_or(&[][..], |a| a.value.items_at("validValues"));
                let pattern = args.and_then(|a| a.value.text_at("pattern"));
                match (&f, valid.is_empty(), pattern) {
                    (Some(f), false, _) | (Some(f), _, Some(_)) => {
                        let pattern = args.and_then(|a| a.value.text_at("pattern"));
                        // A null is not an invalid value (nullValues counts those): a record is
                        // bad when its value is present and not valid.
                        let mut ok = Vec::new();
                        let lits: Vec<String> =
                            valid.iter().filter_map(|v| sql_literal(&v.value)).collect();
                        if !lits.is_empty() {
                            ok.push(format!("{f} IN ({})", lits.join(", ")));
                        }
                        if let Some(p) = pattern {
                            ok.push(format!(
                                "{f} REGEXP {}",
                                sql_literal(&Node::Str(p)).expect("a string")
                            ));
                        }
                        good = Some(format!("{f} IS NULL OR {}", ok.join(" AND ")));
                        Some((
                            "invalidValues".into(),
                            format!("{f} IS NOT NULL AND NOT ({})", ok.join(" AND ")),
                        ))
                    }
                    (Some(_), true, None) => {
                        return self.note(
                            path.into(),
                            q,
                            "invalidValues without `validValues` or `pattern` has nothing to \
                             check"
                                .into(),
                        )
                    }
                    (None, ..) => None,
                }
            }
            ("library", Some("rowCount")) => {
                slis.push(SliDoc {
                    id,
                    kind: SliKindDoc::RowCount,
                    target: ops,
                    unit,
                    line: q.referenced.line(),
                    element: path.into(),
                });
                return;
            }
            ("library", Some("duplicateValues")) => {
                let fields: Vec<String> = match field {
                    Some(f) => vec![f.to_string()],
                    None => node
                        .get("arguments")
                        .map_or(&[][..], |a| a.value.items_at("properties"))
                        .iter()
                        .filter_map(|p| p.value.text())
                        .collect(),
                };
                if fields.is_empty() {
                    return self.note(
                        path.into(),
                        q,
                        "duplicateValues on a schema object needs `arguments.properties`".into(),
                    );
                }
                slis.push(SliDoc {
                    id,
                    kind: SliKindDoc::Duplicates(fields),
                    target: ops,
                    unit,
                    line: q.referenced.line(),
                    element: path.into(),
                });
                return;
            }
            (_, other) => {
                return self.note(
                    path.into(),
                    q,
                    format!(
                        "quality type `{kind}`{}: not a check meshgate knows",
                        other.map(|m| format!(", metric `{m}`")).unwrap_or_default()
                    ),
                )
            }
        };
        let Some((metric, bad)) = bad else {
            return self.note(
                path.into(),
                q,
                "this metric is per property: on a schema object it names no field".into(),
            );
        };
        if ops.is_empty() {
            return self.note(
                path.into(),
                q,
                "no operator (`mustBe`, ...) to compare".into(),
            );
        }
        if zero_tolerance(&ops, unit) {
            rules.push(at(
                RuleDoc::Full(RuleFullDoc {
                    rule: Some(good.unwrap_or_else(|| format!("({bad}) IS NOT TRUE"))),
                    cel: None,
                    mode,
                    canary: None,
                }),
                q,
            ));
        } else {
            slis.push(SliDoc {
                id,
                kind: SliKindDoc::Bad {
                    metric,
                    predicate: bad,
                },
                target: ops,
                unit,
                line: q.referenced.line(),
                element: path.into(),
            });
        }
    }

    /// `roles`: `access: read` roles read, `write` (and `readwrite`) roles produce. A role
    /// written as a principal (`User:x`, `Group:x`) is used as is; a bare name is `User:<name>`.
    #[allow(clippy::type_complexity)]
    fn roles(
        &mut self,
        doc: &Node,
    ) -> (
        Option<Spanned<Vec<Spanned<String>>>>,
        Option<Spanned<Vec<Spanned<String>>>>,
    ) {
        let Some(roles) = doc.get("roles") else {
            return (None, None);
        };
        let mut producers = Vec::new();
        let mut consumers = Vec::new();
        for (i, r) in roles.value.items().iter().enumerate() {
            let Some(role) = r.value.get("role") else {
                continue;
            };
            let name = role.value.text().unwrap_or_default();
            let principal = if name.contains(':') {
                name
            } else {
                format!("User:{name}")
            };
            let access = r
                .value
                .text_at("access")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let (read, write) = match access.as_str() {
                "read" => (true, false),
                "write" => (false, true),
                "readwrite" | "read-write" | "read_write" | "all" => (true, true),
                other => {
                    self.note(
                        format!("roles[{i}]"),
                        r,
                        format!("access `{other}`: meshgate knows read, write and readwrite"),
                    );
                    continue;
                }
            };
            let producer = principal.starts_with("User:") || !principal.starts_with("Group:");
            if write && producer {
                producers.push(at(principal.clone(), role));
            }
            if read {
                consumers.push(at(principal, role));
            }
        }
        let wrap = |v: Vec<Spanned<String>>| (!v.is_empty()).then(|| at(v, roles));
        (wrap(producers), wrap(consumers))
    }

    /// `slaProperties`: availability, latency and frequency become the contract's SLA targets.
    fn sla(&mut self, doc: &Node) -> Option<Spanned<SlaDoc>> {
        let list = doc.get("slaProperties")?;
        let mut sla = SlaDoc {
            availability: None,
            latency_p99: None,
            freshness: None,
        };
        for (i, s) in list.value.items().iter().enumerate() {
            let path = format!("slaProperties[{i}]");
            let property = s.value.text_at("property").unwrap_or_default();
            let value = s.value.get("value");
            let unit = s.value.text_at("unit");
            let seconds = || {
                let v = value?.value.number()?;
                Some(format!(
                    "{}s",
                    v * unit_seconds(unit.as_deref().unwrap_or("s"))?
                ))
            };
            match property.to_ascii_lowercase().as_str() {
                "availability" | "av" => {
                    let v = value.and_then(|v| v.value.text()).unwrap_or_default();
                    let v = if v.ends_with('%') { v } else { format!("{v}%") };
                    sla.availability = Some(at(v, s));
                }
                "latency" | "ly" => match seconds() {
                    Some(d) => sla.latency_p99 = Some(at(d, s)),
                    None => self.note(path, s, "latency needs a number and a time unit".into()),
                },
                // "Frequency of update": at most this long between records, which is what
                // meshgate's freshness measures.
                "frequency" | "fy" => match seconds() {
                    Some(d) => sla.freshness = Some(at(d, s)),
                    None => self.note(path, s, "frequency needs a number and a time unit".into()),
                },
                "retention" | "re" => self.note(
                    path,
                    s,
                    "retention is the topic's `retention.ms`: enforce it with a `topics.configs` \
                     rule"
                        .into(),
                ),
                other => self.note(
                    path,
                    s,
                    format!(
                        "`{other}` is not measured on the wire (meshgate measures \
                             availability, latency and frequency)"
                    ),
                ),
            }
        }
        Some(at(sla, list))
    }
}

/// Seconds in an ODCS time unit (`d`, `day`, `days`, `h`, `m`, `s`, `ms`, `y`, ...).
fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 0.001,
        "s" | "sec" | "second" | "seconds" => 1.0,
        "m" | "min" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        "y" | "yr" | "year" | "years" => 31_536_000.0,
        _ => return None,
    })
}

/// The per-record predicate of a `sql` check: `SELECT COUNT(*) FROM {object} WHERE <p>`, where
/// `<p>` names fields of one record, counts the records for which `<p>` holds. Anything else (a
/// join, an aggregate over values, no WHERE) needs a table.
fn sql_bad_predicate(q: &Node, field: Option<&str>) -> Result<String, String> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"(?is)^\s*select\s+count\s*\(\s*(?:\*|1)\s*\)\s+from\s+\S+\s+where\s+(.+?)\s*;?\s*$",
        )
        .expect("a valid regex")
    });
    let query = q.text_at("query").unwrap_or_default();
    let mut query = query.replace("{object}", "t").replace("{table}", "t");
    if let Some(f) = field {
        let f = sql_field(f);
        query = query.replace("{property}", &f).replace("{column}", &f);
    }
    let caps = re.captures(&query).ok_or_else(|| {
        "a SQL check other than `SELECT COUNT(*) FROM {object} WHERE <condition on one record>` \
         needs a table"
            .to_string()
    })?;
    Ok(caps[1].to_string())
}

#[cfg(test)]
mod tests;

/// `meshgate check --explain`: for every ODCS document, what became of it: the rules and SLIs
/// it is enforced and measured by, and each element declared but not enforced, with its reason
/// and file:line.
pub fn explain(set: &crate::policy::PolicySet) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in &set.contracts {
        let Some(info) = &c.odcs else { continue };
        let _ = writeln!(
            out,
            "ODCS {} `{}` ({}): contract `{}` on topic `{}`, owner `{}`",
            info.api_version, info.id, c.origin, c.name, c.topic, c.owner
        );
        for r in &c.rules {
            let _ = writeln!(
                out,
                "  rule ({}) at {}: {}",
                r.mode.name(),
                r.origin,
                r.rule.text
            );
        }
        for s in &c.slis {
            let _ = writeln!(
                out,
                "  SLI `{}` at {}: {} {} (measured over {}, never refuses)",
                s.id,
                s.origin,
                s.metric(),
                s.target_text(),
                crate::policy::sli::WINDOW
            );
        }
        explain_not_enforced(&mut out, &c.origin.file, &info.not_enforced);
    }
    for (origin, info) in &set.odcs_unenforced {
        let _ = writeln!(
            out,
            "ODCS {} `{}` ({origin}): not enforced",
            info.api_version, info.id
        );
        explain_not_enforced(&mut out, &origin.file, &info.not_enforced);
    }
    out
}

fn explain_not_enforced(out: &mut String, file: &str, notes: &[NotEnforced]) {
    use std::fmt::Write;
    for n in notes {
        let _ = writeln!(
            out,
            "  declared, not enforced: {file}:{} {}: {}",
            n.line, n.element, n.reason
        );
    }
}
