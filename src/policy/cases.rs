//! `meshgate test`: policies tested like code. Fixture files list requests and the verdict each
//! must get; they run through the same judge as the gateway, with no broker.
//!
//! A fixture file (`POLICY_DIR/tests/*.yaml`, which the policy loader skips) holds `cases:`:
//!
//! ```yaml
//! cases:
//!   - name: a valid order is accepted
//!     produce:
//!       topic: orders.order-events.v1
//!       key: o-1                        # optional
//!       value: {order_id: o-1, customer_id: c-1, order_total: 10}   # JSON, or a string as is
//!       avro: false                     # true: encode `value` with the contract's Avro schema
//!       avro_schema: {...}              # or with this writer schema (implies avro: true)
//!       headers: {trace-id: t-1}
//!       principal: User:orders-svc      # default User:ANONYMOUS
//!       acks: all                       # all, 1 or 0 (default all)
//!       idempotent: true                # default true
//!       compression: none               # only none: the gateway build carries no encoders
//!     expect: accept
//!   - name: a negative total is refused
//!     produce: {topic: orders.order-events.v1, value: {order_total: -1}}
//!     expect: {reject: order_total > 0}  # the rule, or the policy (naming, topics, ...)
//!   - name: a shadowed rule only counts
//!     produce: {...}
//!     expect: {would_reject: order_total > 0}   # accepted, with that shadowed would-reject
//!   - name: topics need three partitions
//!     create_topic: {name: orders.x.v1, partitions: 1, replication_factor: 1, configs: {}}
//!     expect: {reject: partitions}
//! ```
//!
//! Records are encoded as a producer writes them (one batch, record batch v2). An Avro value is
//! given as JSON and written with the contract's current schema, framed with its built-in
//! registry id, as a Confluent serializer would.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::judge::{Limits, NewTopic, PartitionVerdict};
use super::mode::Shadowed;
use super::model::Format;
use super::PolicySet;
use crate::markup::escape as xml;
use crate::schema::avro_data::Decoders;

pub use super::load::CASES_DIR;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesDoc {
    cases: Vec<Spanned<CaseDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDoc {
    name: String,
    #[serde(default)]
    produce: Option<ProduceDoc>,
    #[serde(default)]
    create_topic: Option<CreateTopicDoc>,
    expect: ExpectDoc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceDoc {
    topic: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    avro: bool,
    /// The writer schema (JSON, as text or as YAML), for `avro: true`: the contract's current
    /// schema when absent. Framed with its built-in registry id when the registry knows it, else
    /// with an id the registry does not know (which the gateway refuses).
    #[serde(default)]
    avro_schema: Option<serde_json::Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    acks: Option<String>,
    #[serde(default = "yes")]
    idempotent: bool,
    #[serde(default)]
    compression: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopicDoc {
    name: String,
    #[serde(default = "minus_one")]
    partitions: i32,
    #[serde(default = "minus_one_i16")]
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    #[serde(default)]
    principal: Option<String>,
}

fn minus_one() -> i32 {
    -1
}

fn minus_one_i16() -> i16 {
    -1
}

/// `accept`, `{reject: RULE}` or `{would_reject: RULE}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Accept,
    Reject(String),
    WouldReject(String),
}

/// Serde reads `accept` as a unit variant and the others as one-key maps.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExpectDoc {
    Word(String),
    Map(BTreeMap<String, String>),
}

/// One case, loaded.
#[derive(Debug)]
pub struct Case {
    pub file: String,
    pub line: u64,
    pub name: String,
    request: Request,
    pub expected: Expected,
}

#[derive(Debug)]
enum Request {
    Produce(ProduceDoc),
    CreateTopic(CreateTopicDoc),
}

/// What a case got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `accept`, or the refusal's (policy, rule).
    pub refused: Option<(String, String)>,
    /// The shadowed rules that would have refused.
    pub would_reject: Vec<String>,
    /// The refusal's message, or why the case could not be run.
    pub detail: String,
}

impl Outcome {
    /// Whether the outcome is what the case expects.
    pub fn meets(&self, expected: &Expected) -> bool {
        match (expected, &self.refused) {
            (Expected::Accept, None) => true,
            (Expected::Reject(want), Some((policy, rule))) => want == rule || want == policy,
            (Expected::WouldReject(want), None) => self.would_reject.iter().any(|w| w == want),
            _ => false,
        }
    }

    /// The outcome as an expectation reads.
    pub fn describe(&self) -> String {
        match &self.refused {
            Some((policy, rule)) => format!("reject `{rule}` (policy {policy}): {}", self.detail),
            None if self.would_reject.is_empty() => "accept".into(),
            None => format!("accept, with would_reject {:?}", self.would_reject),
        }
    }
}

fn describe_expected(e: &Expected) -> String {
    match e {
        Expected::Accept => "accept".into(),
        Expected::Reject(r) => format!("reject `{r}`"),
        Expected::WouldReject(r) => format!("accept with would_reject `{r}`"),
    }
}

/// A fixture file that does not load: `file:line: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CaseError {
    pub file: String,
    pub line: u64,
    pub message: String,
}

/// The fixture files under `dir`, sorted; none when it does not exist.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() && depth < 8 {
                stack.push((path, depth + 1));
            } else if matches!(
                path.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Loads every case of `files`, or every problem with them.
pub fn load(files: &[PathBuf]) -> Result<Vec<Case>, Vec<CaseError>> {
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let err = |line: u64, message: String| CaseError {
            file: file.clone(),
            line,
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(err(0, e.to_string()));
                continue;
            }
        };
        let doc: CasesDoc = match serde_saphyr::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                let e = super::load::yaml_error(&file, &e);
                errors.push(err(e.line, e.message));
                continue;
            }
        };
        for c in doc.cases {
            let line = c.referenced.line();
            let c = c.value;
            let request = match (c.produce, c.create_topic) {
                (Some(p), None) => Request::Produce(p),
                (None, Some(t)) => Request::CreateTopic(t),
                _ => {
                    errors.push(err(
                        line,
                        format!(
                            "case `{}`: give exactly one of `produce:` and `create_topic:`",
                            c.name
                        ),
                    ));
                    continue;
                }
            };
            let expected = match c.expect {
                ExpectDoc::Word(w) if w == "accept" => Expected::Accept,
                ExpectDoc::Map(m) if m.len() == 1 => {
                    let (k, v) = m.into_iter().next().expect("one entry");
                    match k.as_str() {
                        "reject" => Expected::Reject(v),
                        "would_reject" => Expected::WouldReject(v),
                        _ => {
                            errors.push(err(line, format!("case `{}`: `expect` is accept, {{reject: RULE}} or {{would_reject: RULE}}, not `{k}`", c.name)));
                            continue;
                        }
                    }
                }
                _ => {
                    errors.push(err(
                        line,
                        format!(
                            "case `{}`: `expect` is accept, {{reject: RULE}} or {{would_reject: RULE}}",
                            c.name
                        ),
                    ));
                    continue;
                }
            };
            cases.push(Case {
                file: file.clone(),
                line,
                name: c.name,
                request,
                expected,
            });
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

/// Runs one case under `set`.
pub fn run(case: &Case, set: &PolicySet, decoders: &Decoders) -> Outcome {
    let outcome =
        |refused: Option<(String, String)>, shadowed: &Shadowed, detail: String| Outcome {
            refused,
            would_reject: shadowed.iter().map(|w| w.rule.clone()).collect(),
            detail,
        };
    match &case.request {
        Request::CreateTopic(t) => {
            let new = NewTopic {
                name: &t.name,
                num_partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t
                    .configs
                    .iter()
                    .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                    .collect(),
            };
            let principal = t.principal.as_deref().unwrap_or(super::ANONYMOUS);
            let mut shadowed = Shadowed::default();
            match set.judge_new_topic_as(&new, principal, &mut shadowed) {
                Ok(()) => outcome(None, &shadowed, String::new()),
                Err(r) => outcome(Some((r.policy.into(), r.rule)), &shadowed, r.message),
            }
        }
        Request::Produce(p) => {
            let principal = p.principal.as_deref().unwrap_or(super::ANONYMOUS);
            let bytes = match encode(p, set) {
                Ok(b) => b,
                Err(why) => {
                    return Outcome {
                        refused: Some(("test".into(), "unencodable".into())),
                        would_reject: vec![],
                        detail: why.to_string(),
                    }
                }
            };
            let acks = match p.acks.as_deref() {
                None | Some("all" | "-1") => -1,
                Some("1") => 1,
                Some("0") => 0,
                Some(other) => {
                    return Outcome {
                        refused: Some(("test".into(), "bad_acks".into())),
                        would_reject: vec![],
                        detail: format!("acks `{other}` is not all, 1 or 0"),
                    }
                }
            };
            let plan = match set.plan_topic_as(&p.topic, principal) {
                Ok(plan) => plan,
                Err(r) => {
                    return outcome(
                        Some((r.policy.into(), r.rule)),
                        &Shadowed::default(),
                        r.message,
                    )
                }
            };
            match set.judge_partition(&plan, acks, Some(&bytes), &Limits::default(), decoders) {
                PartitionVerdict::Accept { shadowed, .. } => {
                    outcome(None, &shadowed, String::new())
                }
                PartitionVerdict::Reject {
                    rejection,
                    shadowed,
                    ..
                } => outcome(
                    Some((rejection.policy.into(), rejection.rule)),
                    &shadowed,
                    rejection.message,
                ),
            }
        }
    }
}

/// Why a case's record could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("compression `{0}`: test cases are uncompressed (only `none`)")]
    Compression(String),
    #[error("cannot encode the record batch: {0}")]
    Batch(String),
    #[error("`avro: true`, but topic `{0}` has no contract")]
    NoContract(String),
    #[error("`avro: true`, but contract `{0}` is not `format: avro`")]
    NotAvro(String),
    #[error("the contract's schema has no registry id")]
    NoRegistryId,
    #[error("the value does not fit the Avro writer schema: {0}")]
    AvroValue(String),
    #[error("`avro_schema` is not an Avro schema: {0}")]
    WriterSchema(String),
}

/// The case's record as a one-record batch.
fn encode(p: &ProduceDoc, set: &PolicySet) -> Result<Vec<u8>, EncodeError> {
    let value = match (&p.value, p.avro) {
        (None, _) => None,
        (Some(serde_json::Value::String(s)), false) => Some(s.clone().into_bytes()),
        (Some(v), false) if p.avro_schema.is_some() => Some(avro_value(p, v, set)?),
        (Some(v), false) => Some(v.to_string().into_bytes()),
        (Some(v), true) => Some(avro_value(p, v, set)?),
    };
    // The gateway only decompresses; its build has no batch compressors, so cases are
    // uncompressed (a compression rule still passes them under its 1 KiB allowance).
    let compression = match p.compression.as_deref() {
        None | Some("none") => Compression::None,
        Some(other) => return Err(EncodeError::Compression(other.to_string())),
    };
    let (producer_id, epoch, sequence) = if p.idempotent {
        (1, 0, 0)
    } else {
        (-1, -1, -1)
    };
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: p.key.clone().map(bytes::Bytes::from),
        value: value.map(bytes::Bytes::from),
        headers: p
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    StrBytes::from_string(k.clone()),
                    Some(bytes::Bytes::from(v.clone())),
                )
            })
            .collect(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::slice::from_ref(&record),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| EncodeError::Batch(e.to_string()))?;
    Ok(buf.to_vec())
}

/// `value` written with the topic's contract schema, Confluent-framed with its registry id.
fn avro_value(
    p: &ProduceDoc,
    value: &serde_json::Value,
    set: &PolicySet,
) -> Result<Vec<u8>, EncodeError> {
    let contract = set
        .contract_for(&p.topic)
        .ok_or_else(|| EncodeError::NoContract(p.topic.clone()))?;
    let schema = contract
        .schema
        .as_ref()
        .filter(|s| s.format == Format::Avro)
        .and_then(|s| s.avro.as_ref())
        .ok_or_else(|| EncodeError::NotAvro(contract.name.clone()))?;
    let subject = format!("{}-value", contract.topic);
    let (writer, id) = match &p.avro_schema {
        None => {
            let id = set
                .registry
                .versions(&subject)
                .and_then(|v| v.last())
                .map(|v| v.id)
                .ok_or(EncodeError::NoRegistryId)?;
            (schema.decoder.clone(), id)
        }
        Some(w) => {
            let text = match w {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let writer = apache_avro::Schema::parse_str(&text)
                .map_err(|e| EncodeError::WriterSchema(e.to_string()))?;
            let id = match set.registry.lookup(&subject, &text) {
                Some(v) => v.id,
                // The largest id the registry does not serve.
                None => (1..=i32::MAX as u32)
                    .rev()
                    .find(|id| !set.avro_writers.contains_key(id))
                    .ok_or(EncodeError::NoRegistryId)?,
            };
            (writer, id)
        }
    };
    let resolved = apache_avro::types::Value::from(value.clone())
        .resolve(&writer)
        .map_err(|e| EncodeError::AvroValue(e.to_string()))?;
    let body = apache_avro::to_avro_datum(&writer, resolved)
        .map_err(|e| EncodeError::AvroValue(e.to_string()))?;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&id.to_be_bytes());
    framed.extend(body);
    Ok(framed)
}

/// Every case's outcome under a policy set (and, with `--against`, the old set's).
pub struct Report {
    pub results: Vec<(Outcome, Option<Outcome>)>,
}

/// Runs every case.
pub fn run_all(cases: &[Case], set: &PolicySet, old: Option<&PolicySet>) -> Report {
    let decoders = set.compile_decoders();
    let old_decoders = old.map(PolicySet::compile_decoders);
    let results = cases
        .iter()
        .map(|c| {
            let now = run(c, set, &decoders);
            let before = old.zip(old_decoders.as_ref()).map(|(o, d)| run(c, o, d));
            (now, before)
        })
        .collect();
    Report { results }
}

impl Report {
    pub fn failures(&self, cases: &[Case]) -> usize {
        cases
            .iter()
            .zip(&self.results)
            .filter(|(c, (o, _))| !o.meets(&c.expected))
            .count()
    }

    /// The summary a terminal shows: one line per failure (with what was expected and what
    /// came), one per verdict that changed since the old set, then the counts.
    pub fn text(&self, cases: &[Case]) -> String {
        let mut out = String::new();
        for (c, (now, before)) in cases.iter().zip(&self.results) {
            if !now.meets(&c.expected) {
                let _ = writeln!(
                    out,
                    "FAIL {}:{}: {}\n  expected: {}\n  got:      {}",
                    c.file,
                    c.line,
                    c.name,
                    describe_expected(&c.expected),
                    now.describe()
                );
            }
            if let Some(before) = before {
                if before.refused != now.refused || before.would_reject != now.would_reject {
                    let _ = writeln!(
                        out,
                        "CHANGED {}:{}: {}\n  old set: {}\n  new set: {}",
                        c.file,
                        c.line,
                        c.name,
                        before.describe(),
                        now.describe()
                    );
                }
            }
        }
        let failed = self.failures(cases);
        let _ = writeln!(
            out,
            "{} case(s): {} passed, {failed} failed",
            cases.len(),
            cases.len() - failed
        );
        out
    }

    /// JUnit XML: one `testsuite` per fixture file, one `testcase` per case.
    pub fn junit(&self, cases: &[Case]) -> String {
        let mut by_file: BTreeMap<&str, Vec<(&Case, &Outcome)>> = BTreeMap::new();
        for (c, (now, _)) in cases.iter().zip(&self.results) {
            by_file.entry(&c.file).or_default().push((c, now));
        }
        let failed = self.failures(cases);
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"meshgate test\" tests=\"{}\" failures=\"{failed}\" errors=\"0\">",
            cases.len()
        );
        for (file, list) in by_file {
            let fails = list.iter().filter(|(c, o)| !o.meets(&c.expected)).count();
            let _ = writeln!(
                x,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" errors=\"0\" skipped=\"0\">",
                xml(file),
                list.len()
            );
            for (c, o) in list {
                let _ = write!(
                    x,
                    "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                    xml(&c.name),
                    xml(file),
                    xml(file),
                    c.line
                );
                if o.meets(&c.expected) {
                    x.push_str("/>\n");
                } else {
                    let message = format!(
                        "expected {}, got {}",
                        describe_expected(&c.expected),
                        o.describe()
                    );
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\" type=\"verdict\">{}</failure>\n    </testcase>",
                        xml(&message),
                        xml(&message)
                    );
                }
            }
            x.push_str("  </testsuite>\n");
        }
        x.push_str("</testsuites>\n");
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
naming:
  topics: { pattern: '^[a-z]+\.[a-z-]+\.v[0-9]+$' }
topics:
  partitions: { min: 3 }
---
contract:
  name: orders
  owner: shop
  topic: shop.orders.v1
  schema:
    format: avro
    definition: {"type": "record", "name": "O", "fields": [{"name": "total", "type": "double"}, {"name": "customer", "type": ["null", "string"], "default": null}]}
  quality:
    validity_rules:
      - total > 0
      - rule: customer is not null
        mode: shadow
"#;

    const CASES: &str = r#"
cases:
  - name: avro accepted
    produce: {topic: shop.orders.v1, avro: true, value: {total: 3.5, customer: c-1}}
    expect: accept
  - name: avro refused by its rule
    produce: {topic: shop.orders.v1, avro: true, value: {total: -1, customer: c-1}}
    expect: {reject: total > 0}
  - name: the shadowed rule counts only
    produce: {topic: shop.orders.v1, avro: true, value: {total: 1, customer: null}}
    expect: {would_reject: customer is not null}
  - name: not Avro at all
    produce: {topic: shop.orders.v1, value: {total: 1}}
    expect: {reject: schema}
  - name: a bad name
    create_topic: {name: Bad, partitions: 3}
    expect: {reject: naming}
  - name: wrong on purpose
    create_topic: {name: shop.x.v1, partitions: 1}
    expect: accept
  - name: a writer schema the registry does not know is refused
    produce:
      topic: shop.orders.v1
      avro_schema: {"type": "record", "name": "O", "fields": [{"name": "total", "type": "double"}, {"name": "extra", "type": "long"}]}
      value: {total: 2, extra: 1}
    expect: {reject: schema}
"#;

    fn fixture(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshgate-cases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn cases_run_through_the_judge_and_a_wrong_expectation_fails_with_a_diff() {
        let set = crate::policy::load::compile_text("p.yaml", POLICIES);
        let cases = load(&[fixture("c.yaml", CASES)]).unwrap();
        let report = run_all(&cases, &set, None);
        let met: Vec<bool> = cases
            .iter()
            .zip(&report.results)
            .map(|(c, (o, _))| o.meets(&c.expected))
            .collect();
        assert_eq!(met, [true, true, true, true, true, false, true]);
        assert_eq!(report.failures(&cases), 1);
        assert!(
            report.results[6]
                .0
                .detail
                .contains("is unknown to the schema registry"),
            "{:?}",
            report.results[6].0
        );
        let text = report.text(&cases);
        assert!(
            text.contains("c.yaml:18: wrong on purpose\n  expected: accept\n  got:      reject `partitions` (policy topics)"),
            "{text}"
        );
        assert!(text.ends_with("7 case(s): 6 passed, 1 failed\n"), "{text}");
        let xml = report.junit(&cases);
        assert!(xml.contains("tests=\"7\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<testcase name=\"wrong on purpose\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"expected accept, got reject `partitions`"),
            "{xml}"
        );
    }

    #[test]
    fn against_an_old_set_the_changed_verdicts_are_listed() {
        let set = crate::policy::load::compile_text("p.yaml", POLICIES);
        let old = crate::policy::load::compile_text(
            "old.yaml",
            &POLICIES.replace("partitions: { min: 3 }", "partitions: { min: 1 }"),
        );
        let cases = load(&[fixture("c2.yaml", CASES)]).unwrap();
        let text = run_all(&cases, &set, Some(&old)).text(&cases);
        assert!(
            text.contains("CHANGED ")
                && text.contains(
                    "wrong on purpose\n  old set: accept\n  new set: reject `partitions`"
                ),
            "{text}"
        );
        assert_eq!(text.matches("CHANGED ").count(), 1, "{text}");
    }

    #[test]
    fn bad_fixture_files_say_where() {
        let e = load(&[fixture(
            "bad.yaml",
            "cases:\n  - name: x\n    produce: {topic: t}\n    expect: maybe\n  - name: y\n    produce: {topic: t, colour: red}\n    expect: accept\n",
        )])
        .unwrap_err();
        assert!(e[0].to_string().contains("bad.yaml:6:"), "{e:?}");
        let e = load(&[fixture(
            "bad2.yaml",
            "cases:\n  - name: x\n    produce: {topic: t}\n    expect: maybe\n",
        )])
        .unwrap_err();
        assert!(
            e[0].to_string().starts_with(&format!(
                "{}:2: case `x`: `expect` is accept",
                std::env::temp_dir()
                    .join(format!("meshgate-cases-{}", std::process::id()))
                    .join("bad2.yaml")
                    .display()
            )),
            "{e:?}"
        );
    }
}
