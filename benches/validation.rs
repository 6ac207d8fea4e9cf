//! Per-record cost of contract validation, on one core: the seed's two rules over a realistic
//! 10-field JSON order record, through the same judge the data path uses (batch parse, JSON
//! decode, schema check, rules). Reported as records per second.
//!
//!   cargo bench --bench validation

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::Compression;
use meshgate::policy::judge::{Limits, PartitionVerdict};
use meshgate::policy::load::load_dir;
use meshgate::policy::PolicySet;
use meshgate::schema::avro_data::Decoders;

mod support;

const RECORDS_PER_BATCH: usize = 500;

fn order(i: usize) -> String {
    format!(
        r#"{{"order_id":"o-{i:08}","customer_id":"c-{:05}","order_total":{}.{:02},"currency":"EUR","status":"PAID","item_count":{},"channel":"web","placed_at":1764000000{:03},"coupon":null,"shipping_country":"FR"}}"#,
        i % 50_000,
        10 + i % 500,
        i % 100,
        1 + i % 7,
        i % 1000
    )
}

fn batch(compression: Compression) -> Bytes {
    batch_with(compression, 0)
}

/// A batch where every `invalid_every`-th record breaks `order_total > 0` (0: none does).
fn batch_with(compression: Compression, invalid_every: usize) -> Bytes {
    let records = (0..RECORDS_PER_BATCH).map(|i| {
        let value = if invalid_every > 0 && i % invalid_every == 0 {
            order(i).replace("\"order_total\":", "\"order_total\":-")
        } else {
            order(i)
        };
        (Some(Bytes::from(format!("o-{i:08}"))), Bytes::from(value))
    });
    support::batch(records, compression)
}

/// One pass of the judge over the batch, which must accept every record.
fn judge_accepts_all(
    set: &PolicySet,
    decoders: &Decoders,
    topic: &str,
    bytes: &[u8],
    limits: &Limits,
) {
    let plan = set.plan_topic(topic).unwrap();
    match set.judge_partition(&plan, -1, Some(bytes), limits, decoders) {
        PartitionVerdict::Accept { records, .. } => assert_eq!(records, RECORDS_PER_BATCH as u64),
        PartitionVerdict::Reject { rejection, .. } => panic!("{}", rejection.message),
    }
}

fn bench(c: &mut Criterion) {
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/contracts");
    let set = load_dir(&policies).expect("the example contract loads");
    let decoders = set.compile_decoders();
    let limits = Limits::default();
    let mut group = c.benchmark_group("json_contract");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    for (name, compression) in [
        ("uncompressed", Compression::None),
        ("lz4", Compression::Lz4),
    ] {
        let bytes = batch(compression);
        group.bench_function(format!("seed_rules_10_fields_{name}"), |b| {
            b.iter(|| judge_accepts_all(&set, &decoders, "orders.order-events.v1", &bytes, &limits))
        });
    }
    group.finish();
}

/// The same order as Confluent-framed Avro, with three rules, through the built-in registry.
fn bench_avro(c: &mut Criterion) {
    use apache_avro::types::Value;
    let dir = std::env::temp_dir().join(format!("meshgate-bench-avro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema_text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("policies/contracts/schemas/order-events-v1.avsc"),
    )
    .unwrap();
    std::fs::write(dir.join("o.avsc"), &schema_text).unwrap();
    std::fs::write(
        dir.join("c.yaml"),
        "contract:\n  name: o\n  owner: t\n  topic: shop.orders.v1\n  schema: { format: avro, file: o.avsc }\n  quality:\n    validity_rules: [order_total > 0, customer_id is not null, \"status IN ('PAID', 'PLACED')\"]\n",
    )
    .unwrap();
    let set = load_dir(&dir).expect("the Avro contract loads");
    let decoders = set.compile_decoders();
    let id = set.registry.versions("shop.orders.v1-value").unwrap()[0].id;
    let schema = apache_avro::Schema::parse_str(&schema_text).unwrap();
    let records: Vec<(Option<Bytes>, Bytes)> = (0..RECORDS_PER_BATCH)
        .map(|i| {
            let some = |s: String| Value::Union(1, Box::new(Value::String(s)));
            let v = Value::Record(vec![
                ("order_id".into(), Value::String(format!("o-{i:08}"))),
                ("customer_id".into(), some(format!("c-{:05}", i % 50_000))),
                ("order_total".into(), Value::Double(10.0 + (i % 500) as f64)),
                ("currency".into(), Value::String("EUR".into())),
                ("status".into(), Value::Enum(1, "PAID".into())),
                ("item_count".into(), Value::Int(1 + (i % 7) as i32)),
                ("channel".into(), some("web".into())),
                (
                    "placed_at".into(),
                    Value::Long(1_764_000_000_000 + i as i64),
                ),
                ("coupon".into(), Value::Union(0, Box::new(Value::Null))),
                ("shipping_country".into(), some("FR".into())),
            ]);
            let mut value = vec![0u8];
            value.extend_from_slice(&id.to_be_bytes());
            value.extend(apache_avro::to_avro_datum(&schema, v).unwrap());
            (None, Bytes::from(value))
        })
        .collect();
    let bytes = support::batch(records, Compression::None);
    let limits = Limits::default();
    let mut group = c.benchmark_group("avro_contract");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    group.bench_function("confluent_framed_10_fields_3_rules", |b| {
        b.iter(|| judge_accepts_all(&set, &decoders, "shop.orders.v1", &bytes, &limits))
    });
    group.finish();
}

/// Shadow mode against enforce, on the same records: all valid (the mode is never consulted), and
/// with 1% breaking a rule (shadow forwards them and notes the rule once per batch; enforce
/// refuses the batch and lists every offending record).
fn bench_modes(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/contracts");
    let dir = std::env::temp_dir().join(format!("meshgate-bench-modes-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::copy(
        root.join("schemas/order-events-v1.avsc"),
        dir.join("schemas/order-events-v1.avsc"),
    )
    .unwrap();
    let contract = std::fs::read_to_string(root.join("order-events-v1.yaml")).unwrap();
    let limits = Limits::default();
    let mut group = c.benchmark_group("modes");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    for mode in ["enforce", "shadow"] {
        let text = contract.replace(
            "  owner: orders-domain-team\n",
            &format!("  owner: orders-domain-team\n  mode: {mode}\n"),
        );
        std::fs::write(dir.join("c.yaml"), text).unwrap();
        let set = load_dir(&dir).expect("the contract loads");
        let decoders = set.compile_decoders();
        for (name, invalid_every) in [("all_valid", 0), ("1pct_invalid", 100)] {
            let bytes = batch_with(Compression::None, invalid_every);
            let plan = set.plan_topic("orders.order-events.v1").unwrap();
            group.bench_function(format!("{mode}_{name}"), |b| {
                b.iter(|| {
                    let v = set.judge_partition(&plan, -1, Some(&bytes), &limits, &decoders);
                    let refused = matches!(v, PartitionVerdict::Reject { .. });
                    assert_eq!(refused, mode == "enforce" && invalid_every > 0);
                    v
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, bench_avro, bench_modes);
criterion_main!(benches);
