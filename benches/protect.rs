//! Per-record cost of field protection, on one core: a 1 KiB JSON order record with one pii
//! field (`customer_id`), 500 records per batch, sealed as a produce is and opened for a reader
//! as a Fetch answer is. Reported as records and bytes per second.
//!
//!   cargo bench --bench protect

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::Compression;
use meshgate::policy::protect::{compile, View};
use meshgate::protect::fetch::{show_records, TopicView};
use meshgate::protect::keys::{DataKey, KeyRing};
use meshgate::protect::{seal_records, Layout, Required, SealKeys};

mod support;

const RECORDS: usize = 500;

fn order(i: usize) -> String {
    let head = format!(
        r#"{{"order_id":"o-{i:08}","customer_id":"c-{:05}","order_total":{}.5,"currency":"EUR","status":"PAID","item_count":2,"channel":"web","placed_at":1764000000000,"coupon":null,"shipping_country":"FR","comment":""#,
        i % 50_000,
        10 + i % 500
    );
    format!("{head}{}\"}}", "x".repeat(1024 - head.len() - 2))
}

fn batch(compression: Compression) -> Bytes {
    support::batch(
        (0..RECORDS).map(|i| (None, Bytes::from(order(i)))),
        compression,
    )
}

fn bench(c: &mut Criterion) {
    let doc = serde_json::from_str(r#"{"pii": "encrypt"}"#).expect("literal");
    let protect = Arc::new(
        compile(&doc, &[("customer_id".into(), "pii".into())], vec![], None).expect("compiles"),
    );
    let key = Arc::new(DataKey::fixed("20261201.aa", [7; 32]));
    let keys = SealKeys {
        random: Some(key.clone()),
        deterministic: None,
    };
    let ring = KeyRing::in_memory(vec![("t", key)]);
    let view = TopicView {
        topic: "t".into(),
        protect: protect.clone(),
        view: View::Plain,
        stats: None,
        avro: None,
    };
    let mut g = c.benchmark_group("protect");
    for (name, compression) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let plain = batch(compression);
        let seal = || {
            seal_records(
                &plain,
                "t",
                (&protect, Layout::Json),
                &keys,
                64 << 20,
                &mut Required::Enforce,
            )
            .expect("seals")
        };
        g.throughput(Throughput::Elements(RECORDS as u64));
        g.bench_function(format!("seal/{name}"), |b| b.iter(seal));
        let sealed = seal().set.expect("sealed");
        g.bench_function(format!("open/{name}"), |b| {
            b.iter(|| show_records(&sealed, &view, Some(&ring), 64 << 20, None).expect("opened"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
