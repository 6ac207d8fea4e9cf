//! The audit trail's cost per event, on one core: building the chained line (JSON and SHA-256)
//! and writing it, as the writer thread does. The budget in #15 is 10,000 decisions a second at
//! most 5% of meshgate's CPU, i.e. at most 5 µs of CPU per event; the events/s reported here
//! turn into that share directly (CPU share = 10,000 / events per second).
//!
//!   cargo bench --bench audit

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshgate::audit::{chain_line, AuditConfig, AuditCounters, AuditEvent, AuditLog, GENESIS};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        time_ms: 1_796_000_000_000 + i,
        principal: Arc::from("User:orders-svc"),
        client_id: "rdkafka".into(),
        client_addr: Some("10.0.0.7:51234".into()),
        api: "produce",
        resource: "orders.order-events.v1-3".into(),
        decision: "rejected",
        policy: Some("contract"),
        rule: Some("order_total > 0".into()),
        mode: None,
        reason: Some(
            "meshgate: topic `orders.order-events.v1`: record 0: breaks contract `order-events-v1` rule `order_total > 0` (policies/contracts/order-events-v1.yaml:18)".into(),
        ),
        generation: 7,
        policy_hash: Arc::from("5be1c0d3a9f24b7e8c6d5f4e3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    let e = event(1);
    group.bench_function("chain_line", |b| b.iter(|| chain_line(42, GENESIS, &e)));
    // Through the queue to the writer thread and the file, 1,000 events per iteration, flushed.
    let dir = std::env::temp_dir().join(format!("meshgate-bench-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let counter = |n: &str| prometheus::IntCounter::new(n, n).unwrap();
    let log = AuditLog::start(
        AuditConfig {
            file: dir.join("audit.jsonl"),
            max_bytes: 64 * 1024 * 1024,
            keep: 2,
        },
        AuditCounters {
            written: counter("w"),
            dropped: counter("d"),
            failed: counter("f"),
        },
    )
    .unwrap();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("record_1000_and_flush", |b| {
        b.iter(|| {
            for i in 0..1000 {
                log.record(event(i));
            }
            assert!(log.flush(Duration::from_secs(10)));
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
