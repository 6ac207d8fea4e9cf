//! The audit trail's cost per event on the writer thread: building the chained line (JSON and
//! SHA-256). What the trail costs meshgate as a whole, end to end, is measured by
//! `benches/audit_cpu.py` (the writer wakes once per 10 ms window, so a per-event wall time here
//! would measure that window, not CPU).
//!
//!   cargo bench --bench audit

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshgate::audit::{chain_line, AuditEvent, GENESIS};

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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
