use std::path::PathBuf;

use crate::policy::judge::{Limits, PartitionVerdict};
use crate::policy::load::compile_sources;
use crate::policy::sli::SliKind;
use crate::policy::PolicySet;
use crate::schema::avro_data::Decoders;

fn compile(files: &[(&str, &str)]) -> (PolicySet, Vec<String>) {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(f, t)| (PathBuf::from(f), t.to_string()))
        .collect();
    let mut errors = Vec::new();
    let set = compile_sources(&sources, &mut errors);
    (set, errors.iter().map(|e| e.to_string()).collect())
}

/// Whether a one-record batch with `value` is accepted on `topic`.
fn accepts(set: &PolicySet, topic: &str, principal: &str, value: &str) -> bool {
    use crate::protocol::records::test_batch;
    use kafka_protocol::records::Compression;
    let specs: Vec<test_batch::Spec<'_>> = vec![(Some(&b"k"[..]), Some(value.as_bytes()), &[][..])];
    let bytes = test_batch::encode(&specs, Compression::None);
    let Ok(plan) = set.plan_topic_as(topic, principal) else {
        return false;
    };
    matches!(
        set.judge_partition(
            &plan,
            -1,
            Some(&bytes),
            &Limits::default(),
            &Decoders::default()
        ),
        PartitionVerdict::Accept { .. }
    )
}

/// Every example of the standard's repository (tests/fixtures/odcs, copied with its licence).
fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odcs");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".odcs.yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_of_the_standard_loads_and_what_is_not_enforced_is_listed() {
    let examples = examples();
    assert!(examples.len() >= 15, "{} examples", examples.len());
    for (name, text) in &examples {
        let (set, errors) = compile(&[(name, text)]);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let contracts = set.contracts.len();
        let unenforced = set.odcs_unenforced.len();
        assert_eq!(contracts + unenforced, 1, "{name}: one document, one entry");
        if let Some(c) = set.contracts.first() {
            assert!(c.odcs.is_some(), "{name}");
        }
    }
    // The Kafka examples become contracts on their topics.
    let kafka = |file: &str| {
        let (_, text) = examples.iter().find(|(n, _)| n == file).unwrap();
        compile(&[(file, text)]).0
    };
    let set = kafka("kafka-schema.odcs.yaml");
    let c = &set.contracts[0];
    assert_eq!(
        (c.name.as_str(), c.topic.as_str()),
        ("Orders Event Stream", "orders")
    );
    let schema = c.schema.as_ref().unwrap();
    assert_eq!(schema.version.as_deref(), Some("0.0.1"));
    assert_eq!(
        c.required_fields.len(),
        3,
        "cust_id, prod_id, qty are required"
    );
    assert_eq!(
        kafka("kafka-server.odcs.yaml").contracts[0].topic,
        "orders.avro.v1"
    );
    // A table's contract names no topic: loaded, listed, and says why.
    let set = kafka("full-example.odcs.yaml");
    assert!(set.contracts.is_empty());
    let (_, info) = &set.odcs_unenforced[0];
    assert!(info.not_enforced[0].reason.contains("names no Kafka topic"));
    assert!(
        info.not_enforced
            .iter()
            .any(|n| n.reason.contains("`postgres` server")),
        "{:?}",
        info.not_enforced
    );
    // The roles example: read roles read, the write role produces.
    let set = kafka("service-and-operational-roles.odcs.yaml");
    if let Some(c) = set.contracts.first() {
        assert!(c.producers.iter().any(|p| &**p == "User:bq_unica_user_opr"));
    }
}

const ORDERS: &str = r#"
apiVersion: v3.1.0
kind: DataContract
id: orders-v1
name: orders
version: 1.2.0
status: active
domain: sales
team:
  name: checkout
  members:
    - username: ana@example.com
servers:
  - server: prod
    type: kafka
    host: kafka:9092
    format: json
    customProperties:
      - property: topic
        value: shop.orders.v1
roles:
  - role: orders-svc
    access: write
  - role: User:analytics
    access: read
slaProperties:
  - property: availability
    value: 99.9
  - property: latency
    value: 2
    unit: s
  - property: frequency
    value: 5
    unit: m
  - property: endOfLife
    value: 2030-01-01
schema:
  - name: Order
    physicalType: topic
    properties:
      - name: order_id
        logicalType: string
        required: true
        logicalTypeOptions:
          pattern: '^o-[0-9]+$'
      - name: customer_id
        logicalType: string
        classification: pii
        quality:
          - metric: nullValues
            mustBe: 0
      - name: status
        logicalType: string
        quality:
          - metric: invalidValues
            arguments:
              validValues: [NEW, PAID]
            mustBe: 0
          - metric: nullValues
            mustBeLessThan: 10
            unit: percent
            id: status_mostly_set
      - name: total
        logicalType: number
        logicalTypeOptions:
          minimum: 0
        quality:
          - type: sql
            query: SELECT COUNT(*) FROM {object} WHERE {property} > 10000
            mustBe: 0
            severity: warning
          - type: sql
            query: SELECT AVG({property}) FROM {object}
            mustBeLessThan: 500
          - type: text
            description: totals are in euros
      - name: email
        logicalType: string
        classification: restricted
        quality:
          - metric: missingValues
            arguments:
              missingValues: ['', 'N/A']
            mustBe: 0
    quality:
      - metric: rowCount
        mustBeGreaterThan: 100
      - metric: duplicateValues
        mustBe: 0
        arguments:
          properties: [order_id]
"#;

#[test]
fn an_odcs_contract_maps_its_schema_rules_slis_roles_and_sla() {
    let (set, errors) = compile(&[("orders.odcs.yaml", ORDERS)]);
    assert!(errors.is_empty(), "{errors:?}");
    let c = &set.contracts[0];
    assert_eq!(
        (c.name.as_str(), c.owner.as_str(), c.topic.as_str()),
        ("orders", "checkout", "shop.orders.v1")
    );
    assert_eq!(&*c.producers, &["User:orders-svc".into()]);
    assert_eq!(
        c.consumers.as_ref().unwrap().principals,
        vec![Box::<str>::from("User:analytics")]
    );
    assert_eq!(c.sla.availability, Some(0.999));
    assert_eq!(c.sla.latency_p99, Some(std::time::Duration::from_secs(2)));
    assert_eq!(c.sla.freshness, Some(std::time::Duration::from_secs(300)));
    let info = c.odcs.as_ref().unwrap();
    assert_eq!(
        (
            info.status.as_deref(),
            info.domain.as_deref(),
            info.version.as_deref()
        ),
        (Some("active"), Some("sales"), Some("1.2.0"))
    );
    assert_eq!(info.members, ["ana@example.com"]);
    let schema = c.schema.as_ref().unwrap();
    assert!(schema
        .classified
        .iter()
        .any(|(f, l, _)| f == "customer_id" && l == "pii"));
    // Per-record rules: pattern, nullValues 0, invalidValues 0, minimum, the warning SQL check.
    let texts: Vec<&str> = c.rules.iter().map(|r| r.rule.text.as_str()).collect();
    assert_eq!(texts.len(), 6, "{texts:?}");
    assert!(texts.contains(&"customer_id IS NOT NULL"), "{texts:?}");
    assert!(
        texts.contains(&"email IS NULL OR email NOT IN ('', 'N/A')"),
        "{texts:?}"
    );
    assert!(c.rules.iter().any(|r| r.mode.name() == "shadow"));
    // Windowed: the 10% null SLI, rowCount and duplicates.
    let slis: Vec<(&str, &str)> = c.slis.iter().map(|s| (s.id.as_str(), s.metric())).collect();
    assert_eq!(
        slis,
        [
            ("status_mostly_set", "nullValues"),
            ("rowCount", "rowCount"),
            ("duplicateValues", "duplicateValues")
        ]
    );
    assert!(matches!(c.slis[1].kind, SliKind::RowCount));
    // Not enforced, each with a reason: the AVG query, the text rule, `restricted`, endOfLife.
    let reasons: Vec<String> = info
        .not_enforced
        .iter()
        .map(|n| format!("{}: {}", n.element, n.reason))
        .collect();
    for expected in [
        "needs a table",
        "read by people",
        "`restricted`",
        "`endoflife`",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:#?}"
        );
    }

    // The verdicts.
    let ok = r#"{"order_id":"o-1","customer_id":"c","status":"PAID","total":5}"#;
    assert!(accepts(&set, "shop.orders.v1", "User:orders-svc", ok));
    assert!(
        !accepts(&set, "shop.orders.v1", "User:other", ok),
        "not a producer"
    );
    for bad in [
        r#"{"order_id":"x-1","customer_id":"c","status":"PAID","total":5}"#,
        r#"{"order_id":"o-1","customer_id":null,"status":"PAID","total":5}"#,
        r#"{"order_id":"o-1","customer_id":"c","status":"LOST","total":5}"#,
        r#"{"order_id":"o-1","customer_id":"c","status":"PAID","total":-1}"#,
        r#"{"customer_id":"c","status":"PAID","total":5}"#,
    ] {
        assert!(
            !accepts(&set, "shop.orders.v1", "User:orders-svc", bad),
            "{bad}"
        );
    }
    // A null status is not an invalid value; the shadowed check does not refuse.
    for fine in [
        r#"{"order_id":"o-1","customer_id":"c","status":null,"total":5}"#,
        r#"{"order_id":"o-1","customer_id":"c","status":"NEW","total":20000}"#,
    ] {
        assert!(
            accepts(&set, "shop.orders.v1", "User:orders-svc", fine),
            "{fine}"
        );
    }
    // The SLIs counted what was judged acceptable: 1 null status of 3; one repeated order_id.
    let nulls = &c.slis[0];
    let (value, holds) = nulls.measured().unwrap();
    assert!((value - 100.0 / 3.0).abs() < 1e-9, "{value}");
    assert!(!holds);
    assert_eq!(c.slis[2].measured(), Some((2.0, false)));
}

#[test]
fn a_document_that_breaks_the_standard_is_refused_at_its_line() {
    let text = "apiVersion: v3.1.0\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: active\nschema:\n  - name: t\n    properties: 7\n";
    let (set, errors) = compile(&[("bad.odcs.yaml", text)]);
    assert!(set.contracts.is_empty());
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("bad.odcs.yaml:8: ODCS: `/schema/0/properties`")),
        "{errors:?}"
    );
    // A required key missing: reported at the document.
    let (_, errors) = compile(&[(
        "bad.odcs.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\nid: x\n",
    )]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"version\" is a required property")),
        "{errors:?}"
    );
    // ODCS v2 is not read.
    let (_, errors) = compile(&[(
        "old.odcs.yaml",
        "apiVersion: v2.2.2\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: active\n",
    )]);
    assert!(errors.iter().any(|e| e.contains("ODCS v3.x")), "{errors:?}");
    // ODCS and meshgate documents do not share a file.
    let (_, errors) = compile(&[(
        "mixed.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: active\n---\nnaming:\n  topics: {pattern: '.*'}\n",
    )]);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("mixed.yaml:7: a file with ODCS")),
        "{errors:?}"
    );
}

/// The `contract:` a team would write for the same rules as [`ORDERS`].
const ORDERS_NATIVE: &str = r#"
contract:
  name: orders
  owner: checkout
  topic: shop.orders.v1
  producers: [User:orders-svc]
  schema:
    format: json
    definition:
      type: record
      name: Order
      fields:
        - {name: order_id, type: string}
        - {name: customer_id, type: ["null", string], default: null}
        - {name: status, type: ["null", string], default: null}
        - {name: total, type: ["null", double], default: null}
        - {name: email, type: ["null", string], default: null}
  quality:
    validity_rules:
      - "order_id IS NULL OR order_id REGEXP '^o-[0-9]+$'"
      - customer_id IS NOT NULL
      - status IS NULL OR status IN ('NEW', 'PAID')
      - total IS NULL OR total >= 0
      - email IS NULL OR email NOT IN ('', 'N/A')
"#;

/// A small deterministic generator (xorshift64*), so a failing case can be replayed by seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[(self.next() % from.len() as u64) as usize]
    }
}

/// A record built from values near every rule's edges: missing fields, nulls, wrong types,
/// boundary numbers, patterns that almost match.
fn record(g: &mut Gen) -> String {
    let order_id = [
        "\"o-1\"",
        "\"o-0009\"",
        "\"o-\"",
        "\"x-1\"",
        "\"o-12a\"",
        "null",
        "7",
    ];
    let customer = ["\"c-1\"", "\"\"", "null", "1"];
    let status = [
        "\"NEW\"", "\"PAID\"", "\"paid\"", "\"LOST\"", "null", "true",
    ];
    let total = ["0", "10", "-0.01", "-5", "99999", "null", "\"3\"", "1e3"];
    let email = ["\"a@b\"", "null", "\"\"", "\"N/A\"", "\"n/a\""];
    let mut fields = Vec::new();
    for (name, values) in [
        ("order_id", &order_id[..]),
        ("customer_id", &customer[..]),
        ("status", &status[..]),
        ("total", &total[..]),
        ("email", &email[..]),
    ] {
        // One field in twelve is left out; the others are valid (the first two values) three
        // times in four, so records pass often enough for agreement on accepts to mean something.
        if !g.next().is_multiple_of(12) {
            let value = if !g.next().is_multiple_of(4) {
                g.pick(&values[..2])
            } else {
                g.pick(values)
            };
            fields.push(format!("\"{name}\":{value}"));
        }
    }
    if g.next().is_multiple_of(7) {
        fields.push("\"extra\":{\"a\":[1,2]}".into());
    }
    format!("{{{}}}", fields.join(","))
}

#[test]
fn an_odcs_contract_and_the_equivalent_contract_give_the_same_verdicts() {
    let (odcs, errors) = compile(&[("orders.odcs.yaml", ORDERS)]);
    assert!(errors.is_empty(), "{errors:?}");
    let (native, errors) = compile(&[("orders.yaml", ORDERS_NATIVE)]);
    assert!(errors.is_empty(), "{errors:?}");
    let seed = 0x5eed_0dc5_u64;
    let mut g = Gen(seed);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..3000 {
        let r = record(&mut g);
        let a = accepts(&odcs, "shop.orders.v1", "User:orders-svc", &r);
        let b = accepts(&native, "shop.orders.v1", "User:orders-svc", &r);
        assert_eq!(a, b, "case {i} (seed {seed:#x}): {r}");
        if a {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // The generator reaches both verdicts often, so the agreement means something.
    assert!(
        accepted > 300 && refused > 300,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn an_exported_contract_loads_back_with_the_same_verdicts() {
    let (native, errors) = compile(&[("orders.yaml", ORDERS_NATIVE)]);
    assert!(errors.is_empty(), "{errors:?}");
    let (doc, left_out) = super::export::contract(&native.contracts[0], "localhost:9092");
    assert!(left_out.is_empty(), "{left_out:?}");
    let yaml = serde_saphyr::to_string(&doc).unwrap();
    let (back, errors) = compile(&[("orders.odcs.yaml", &yaml)]);
    assert!(errors.is_empty(), "{errors:?}\n{yaml}");
    let c = &back.contracts[0];
    assert_eq!(
        (c.topic.as_str(), c.owner.as_str()),
        ("shop.orders.v1", "checkout")
    );
    assert_eq!(c.rules.len(), 5);
    let mut g = Gen(42);
    for _ in 0..1000 {
        let r = record(&mut g);
        assert_eq!(
            accepts(&native, "shop.orders.v1", "User:orders-svc", &r),
            accepts(&back, "shop.orders.v1", "User:orders-svc", &r),
            "{r}\n{yaml}"
        );
    }
}

#[test]
fn quality_thresholds_decide_between_a_rule_and_an_sli() {
    use super::{zero_tolerance, Op, Unit};
    assert!(zero_tolerance(&[(Op::Eq, 0.0)], Unit::Rows));
    assert!(zero_tolerance(&[(Op::Lt, 1.0)], Unit::Rows));
    assert!(zero_tolerance(&[(Op::Le, 0.0)], Unit::Percent));
    assert!(!zero_tolerance(&[(Op::Lt, 1.0)], Unit::Percent));
    assert!(!zero_tolerance(&[(Op::Lt, 5.0)], Unit::Rows));
    assert!(
        !zero_tolerance(&[(Op::Gt, 0.0)], Unit::Rows),
        "0 bad is not allowed"
    );
    assert!(!zero_tolerance(&[], Unit::Rows));
}

#[test]
fn check_against_judges_odcs_contracts_as_any_other() {
    let (old, errors) = compile(&[("orders.odcs.yaml", ORDERS)]);
    assert!(errors.is_empty(), "{errors:?}");
    let breaking = ORDERS.replacen(
        "      - name: total\n        logicalType: number",
        "      - name: total\n        logicalType: string",
        1,
    );
    let breaking = breaking.replacen("minimum: 0", "pattern: '^[0-9]+$'", 1);
    let breaking = breaking.replacen("{property} > 10000", "{property} = 'x'", 1);
    let (new, errors) = compile(&[("orders.odcs.yaml", &breaking)]);
    assert!(errors.is_empty(), "{errors:?}");
    let violations = crate::policy::evolution::check(&new, &old);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0]
            .message
            .contains("breaks Backward compatibility"),
        "{violations:?}"
    );
    // A new major version is a breaking change the evolution rules accept only on a new topic.
    let major = breaking.replacen("version: 1.2.0", "version: 2.0.0", 1);
    let (new, _) = compile(&[("orders.odcs.yaml", &major)]);
    let violations = crate::policy::evolution::check(&new, &old);
    assert!(
        violations.iter().any(|v| v.message.contains("new topic")),
        "{violations:?}"
    );
    let moved = major.replacen("value: shop.orders.v1", "value: shop.orders.v2", 1);
    let (new, _) = compile(&[("orders.odcs.yaml", &moved)]);
    assert!(crate::policy::evolution::check(&new, &old).is_empty());
}
