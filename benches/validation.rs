//! Per-record cost of contract validation, on one core: the seed's two rules over a realistic
//! 10-field JSON order record, through the same judge the data path uses (batch parse, JSON
//! decode, schema check, rules). Reported as records per second.
//!
//!   cargo bench --bench validation

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use meshgate::policy::judge::{Limits, PartitionVerdict};
use meshgate::policy::load::load_dir;

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
    let records: Vec<Record> = (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_764_000_000_000,
            key: Some(Bytes::from(format!("o-{i:08}"))),
            value: Some(Bytes::from(order(i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn bench(c: &mut Criterion) {
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/contracts");
    let set = load_dir(&policies).expect("the example contract loads");
    let limits = Limits::default();
    let mut group = c.benchmark_group("json_contract");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    for (name, compression) in [
        ("uncompressed", Compression::None),
        ("lz4", Compression::Lz4),
    ] {
        let bytes = batch(compression);
        group.bench_function(format!("seed_rules_10_fields_{name}"), |b| {
            b.iter(|| {
                let plan = set.plan_topic("orders.order-events.v1").unwrap();
                match set.judge_partition(&plan, -1, Some(&bytes), &limits) {
                    PartitionVerdict::Accept { records, .. } => {
                        assert_eq!(records, RECORDS_PER_BATCH as u64)
                    }
                    PartitionVerdict::Reject { rejection, .. } => panic!("{}", rejection.message),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
