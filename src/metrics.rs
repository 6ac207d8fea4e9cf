//! Every metric meshgate exports, defined once. Handles are resolved at start-up (per API key) so
//! the data path never formats a label or takes a registry lock.
//!
//! Label values are bounded: API names come from the protocol crate's fixed list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::ApiKey;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the scrape-time gauges need to know of a contract in force (the policy module's
/// `Contract`, seen from here without importing it).
#[derive(Debug, Clone)]
pub struct ContractFacts<'a> {
    pub name: &'a str,
    pub owner: &'a str,
    pub topic: &'a str,
    /// The schema's `version:`, or "".
    pub version: &'a str,
    pub sla_availability: Option<f64>,
    pub sla_latency_p99: Option<std::time::Duration>,
    pub sla_freshness: Option<std::time::Duration>,
    pub completeness_target: Option<f64>,
    /// Its SLIs (ODCS quality rules over a window).
    pub slis: Vec<SliFacts<'a>>,
}

/// (contract, SLI id).
type SliKey = (String, String);

/// One SLI of a contract in force, as the scrape sees it.
#[derive(Debug, Clone)]
pub struct SliFacts<'a> {
    /// Which compiled SLI this is (its address): a reload compiles new ones, counting from 0.
    pub instance: usize,
    pub id: &'a str,
    pub metric: &'a str,
    /// Records judged and bad among them, since the policy generation was loaded.
    pub records: u64,
    pub bad: u64,
    /// Its bounds, as (operator, value): `<`, `>=`, ...
    pub bounds: Vec<(&'static str, f64)>,
    /// `rows` or `percent`.
    pub unit: &'static str,
    /// The bad records as the target counts them, and whether the target holds (none before
    /// any record, and for rowCount).
    pub measured: Option<(f64, bool)>,
}

/// One data product's service-level indicators. Handles are resolved when the contract is first
/// loaded and kept across reloads, so the data path never looks a label up.
pub struct ContractMetrics {
    pub records_valid: IntCounter,
    pub records_invalid: IntCounter,
    pub records_complete: IntCounter,
    pub requests_ok: IntCounter,
    pub requests_failed: IntCounter,
    pub latency: Histogram,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    /// `meshgate_contract_fetch_requests_total{contract}`: Fetch answers that carried the topic.
    pub fetch_requests: IntCounter,
    /// `meshgate_produce_records_total{topic=<contract topic>, outcome}`.
    pub produce_accepted: IntCounter,
    pub produce_rejected: IntCounter,
    /// `meshgate_contract_protected_fields_total{contract, op}`: fields sealed on produce, and on
    /// fetch opened for a reader, masked, or unreadable (their key gone).
    pub fields_sealed: IntCounter,
    pub fields_opened: IntCounter,
    pub fields_masked: IntCounter,
    pub fields_unreadable: IntCounter,
    /// When the last record was accepted (ms since epoch); 0 when none yet.
    pub last_accepted_ms: AtomicU64,
    /// When this contract was first loaded (ms since epoch).
    pub since_ms: u64,
}

impl std::fmt::Debug for ContractMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractMetrics")
            .field("records_valid", &self.records_valid.get())
            .field("records_invalid", &self.records_invalid.get())
            .finish_non_exhaustive()
    }
}

impl ContractMetrics {
    pub fn accepted_now(&self) {
        self.last_accepted_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// The per-contract metric families.
struct ContractFamilies {
    records: IntCounterVec,
    complete: IntCounterVec,
    requests: IntCounterVec,
    latency: HistogramVec,
    validity: GaugeVec,
    completeness: GaugeVec,
    availability: GaugeVec,
    freshness: GaugeVec,
    sla_availability: GaugeVec,
    fetch_requests: IntCounterVec,
    protected_fields: IntCounterVec,
    consumer_lag: GaugeVec,
    active_groups: GaugeVec,
    active_principals: GaugeVec,
    sla_latency: GaugeVec,
    sla_freshness: GaugeVec,
    completeness_target: GaugeVec,
    info: GaugeVec,
    sli_records: IntCounterVec,
    sli_target: GaugeVec,
    sli_value: GaugeVec,
    sli_met: GaugeVec,
    /// (contract, sli) → (instance, good, bad) last carried into `sli_records`: the SLIs count
    /// per policy generation, the exported counter across them.
    sli_seen: Mutex<HashMap<SliKey, (usize, u64, u64)>>,
    by_name: Mutex<HashMap<String, Arc<ContractMetrics>>>,
}

/// Per-API handles, indexed by API key.
#[derive(Clone)]
pub struct ApiMetrics {
    pub requests: IntCounter,
    pub duration: Histogram,
}

/// How many recent rejections the catalog can show.
pub const RECENT_REJECTIONS: usize = 1000;

/// One recent rejection, as a producer team looks it up on the catalog. No record data: the
/// message names rules, fields and types only.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentRejection {
    pub time_ms: u64,
    pub principal: String,
    pub client_id: String,
    pub api: &'static str,
    pub topic: String,
    pub partition: Option<i32>,
    pub policy: &'static str,
    pub rule: String,
    pub error_code: i16,
    pub message: String,
}

/// The last [`RECENT_REJECTIONS`] rejections, newest last: a bounded ring.
#[derive(Debug, Default)]
pub struct RecentRejections {
    ring: Mutex<std::collections::VecDeque<RecentRejection>>,
}

impl RecentRejections {
    /// Longest message kept.
    const MAX_MESSAGE: usize = 1024;

    pub fn push(&self, mut r: RecentRejection) {
        if r.message.len() > Self::MAX_MESSAGE {
            let mut cut = Self::MAX_MESSAGE;
            while !r.message.is_char_boundary(cut) {
                cut -= 1;
            }
            r.message.truncate(cut);
            r.message.push('…');
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= RECENT_REJECTIONS {
            ring.pop_front();
        }
        ring.push_back(r);
    }

    /// The newest first, at most `limit`, of `principal` when given.
    pub fn list(&self, principal: Option<&str>, limit: usize) -> Vec<RecentRejection> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .rev()
            .filter(|r| principal.is_none_or(|p| r.principal == p))
            .take(limit)
            .cloned()
            .collect()
    }
}

pub struct Metrics {
    /// The last rejections, for the catalog (not exported to Prometheus).
    pub recent_rejections: RecentRejections,
    /// Who reads each data product, and how far behind (see `usage`).
    pub usage: crate::usage::Usage,
    /// Hourly usage per team and principal, for `/chargeback` (see `chargeback`).
    pub chargeback: crate::chargeback::Chargeback,
    /// Traffic per partner zone.
    pub zones: crate::zone_stats::ZoneStats,
    /// `meshgate_chargeback_bytes_total{team,principal,direction}`.
    pub chargeback_bytes: IntCounterVec,
    /// `meshgate_chargeback_requests_total{team,principal,api}`.
    pub chargeback_requests: IntCounterVec,
    registry: Registry,
    per_api: Vec<ApiMetrics>,
    unknown_api: ApiMetrics,
    pub connections_active: IntGauge,
    pub connections_refused: IntCounter,
    /// Brokers meshgate could not give a port (unmappable node id, failed bind): not advertised.
    pub broker_port_failures: IntCounter,
    pub upstream_errors: IntCounter,
    /// TLS handshakes that failed with a client (plaintext on a TLS port, an untrusted or missing
    /// client certificate).
    pub tls_client_failures: IntCounter,
    pub frames_rejected: IntCounterVec,
    /// `meshgate_responses_streamed_total`: answers over 256 KiB passed to the client as they
    /// arrived rather than held whole.
    pub responses_streamed: IntCounter,
    pub policy_reloads: IntCounterVec,
    pub policy_generation: IntGauge,
    /// `meshgate_policy_info{hash}` = 1 for the set in force: its content hash, equal on every
    /// gateway that loaded the same files.
    pub policy_info: IntGaugeVec,
    pub policy_rejections: IntCounterVec,
    pub policy_would_reject: IntCounterVec,
    /// When each shadowed rule last would have refused something (Unix seconds).
    pub policy_would_reject_last: IntGaugeVec,
    /// Audit events by outcome: written, dropped (queue full), failed (write error).
    pub audit_events: IntCounterVec,
    /// Refused records of dead-letter contracts by contract topic and outcome: written, failed
    /// (the partition got a retriable error), over_bound (refused as usual).
    pub dead_letter_records: IntCounterVec,
    /// Dead-lettered partitions by contract topic and how the producer was answered:
    /// acknowledged, invalid_record, not_acknowledged (`respond: success` for an idempotent or
    /// transactional batch), retriable (the write failed).
    pub dead_letter_partitions: IntCounterVec,
    /// From handing a letter to the own producer to its answer: what a dead-lettered partition
    /// adds to its request's latency.
    pub dead_letter_write: Histogram,
    /// Bytes of the dead-letter spool that wait for delivery to their topics.
    pub dead_letter_spool_bytes: IntGauge,
    pub produce_records: IntCounterVec,
    pub bytes: IntCounterVec,
    /// `meshgate_bytes_total` handles for traffic no contract claims.
    pub bytes_in_other: IntCounter,
    pub bytes_out_other: IntCounter,
    /// `meshgate_produce_records_total{topic="_other", outcome}`.
    pub produce_accepted_other: IntCounter,
    pub produce_rejected_other: IntCounter,
    contracts: ContractFamilies,
}

/// The `topic` label for a produce outcome: a contract's topic (bounded by the policy files), or
/// `_other` for topics no contract governs, whose names come from clients.
pub fn topic_label(contract_topic: Option<&str>) -> &str {
    contract_topic.unwrap_or("_other")
}

/// What shadowed rules would have refused since the process started, by (policy, rule): the
/// count over every topic and mode, and when the last one was (Unix seconds).
pub type WouldRejects = HashMap<(String, String), (u64, i64)>;

impl Metrics {
    /// The audit writer's counters.
    pub fn audit_counters(&self) -> crate::audit::AuditCounters {
        let c = |outcome| self.audit_events.with_label_values(&[outcome]);
        crate::audit::AuditCounters {
            written: c("written"),
            dropped: c("dropped"),
            failed: c("failed"),
            topic_written: c("topic_written"),
            topic_failed: c("topic_failed"),
        }
    }

    /// Charges one request's contract-topic usage to its teams, under `principal` (already
    /// bounded: `PolicySet::chargeback_principal`).
    pub fn charge(&self, principal: &str, by_team: &[(&Arc<str>, crate::chargeback::Tally)]) {
        if by_team.is_empty() {
            return;
        }
        for (team, t) in by_team {
            let bytes = |direction| {
                self.chargeback_bytes
                    .with_label_values(&[team, principal, direction])
            };
            let requests = |api| {
                self.chargeback_requests
                    .with_label_values(&[team, principal, api])
            };
            if t.produce_requests > 0 {
                bytes("in").inc_by(t.bytes_in);
                requests("produce").inc_by(t.produce_requests);
            }
            if t.fetch_requests > 0 {
                bytes("out").inc_by(t.bytes_out);
                requests("fetch").inc_by(t.fetch_requests);
            }
        }
        self.chargeback.add(now_ms() / 1000, principal, by_team);
    }

    /// The would-reject counts and last times, summed over topics and modes.
    pub fn would_rejects(&self) -> WouldRejects {
        use prometheus::core::Collector;
        let mut out: WouldRejects = HashMap::new();
        let labels = |m: &prometheus::proto::Metric| {
            let get = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            (get("policy"), get("rule"))
        };
        for family in self.policy_would_reject.collect() {
            for m in family.get_metric() {
                out.entry(labels(m)).or_default().0 += m.get_counter().get_value() as u64;
            }
        }
        for family in self.policy_would_reject_last.collect() {
            for m in family.get_metric() {
                let last = &mut out.entry(labels(m)).or_default().1;
                *last = (*last).max(m.get_gauge().get_value() as i64);
            }
        }
        out
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("meshgate_requests_total", "Client requests by Kafka API"),
            &["api"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "meshgate_request_duration_seconds",
                "Time from reading a request to writing its response, by Kafka API",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["api"],
        )
        .expect("valid metric");
        let connections_active = IntGauge::new(
            "meshgate_connections_active",
            "Client connections currently open",
        )
        .expect("valid metric");
        let connections_refused = IntCounter::new(
            "meshgate_connections_refused_total",
            "Client connections refused because max_connections was reached",
        )
        .expect("valid metric");
        let broker_port_failures = IntCounter::new(
            "meshgate_broker_port_failures_total",
            "Upstream brokers seen that meshgate could not serve a port for (node id off the port plan, or the bind failed); they are not advertised",
        )
        .expect("valid metric");
        let tls_client_failures = IntCounter::new(
            "meshgate_tls_handshake_failures_total",
            "Client TLS handshakes that failed (plaintext on a TLS port, a refused client certificate)",
        )
        .expect("valid metric");
        let upstream_errors = IntCounter::new(
            "meshgate_upstream_errors_total",
            "Upstream connect failures, disconnects with requests in flight, and undecodable responses",
        )
        .expect("valid metric");
        let responses_streamed = IntCounter::new(
            "meshgate_responses_streamed_total",
            "Upstream answers over 256 KiB that needed no edit, streamed to the client as they arrived",
        )
        .expect("valid metric");
        registry
            .register(Box::new(responses_streamed.clone()))
            .expect("metric registered once");
        let frames_rejected = IntCounterVec::new(
            Opts::new(
                "meshgate_malformed_frames_total",
                "Client connections closed for a malformed, oversized or unsupported frame",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "meshgate_policy_reloads_total",
                "Policy set loads by outcome (ok, error)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let policy_generation = IntGauge::new(
            "meshgate_policy_generation",
            "Generation of the policy set in force (1 at start, +1 per successful reload)",
        )
        .expect("valid metric");
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "meshgate_policy_info",
                "The policy set in force: its SHA-256 content hash (same files, same hash)",
            ),
            &["hash"],
        )
        .expect("valid metric");
        let policy_rejections = IntCounterVec::new(
            Opts::new(
                "meshgate_policy_rejections_total",
                "Rejected produce partitions and topic creations, by topic, policy and rule",
            ),
            &["topic", "policy", "rule"],
        )
        .expect("valid metric");
        let policy_would_reject = IntCounterVec::new(
            Opts::new(
                "meshgate_policy_would_reject_total",
                "Produce partitions and topic changes a rule in shadow (or on a canary's shadow side) would have refused, by topic, policy, rule and mode; forwarded",
            ),
            &["topic", "policy", "rule", "mode"],
        )
        .expect("valid metric");
        let policy_would_reject_last = IntGaugeVec::new(
            Opts::new(
                "meshgate_policy_would_reject_last_timestamp_seconds",
                "When a rule in shadow (or on a canary's shadow side) last would have refused something, by policy and rule",
            ),
            &["policy", "rule"],
        )
        .expect("valid metric");
        let audit_events = IntCounterVec::new(
            Opts::new(
                "meshgate_audit_events_total",
                "Audit trail events: written, dropped (the queue was full) or failed (a write error)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let dead_letter_records = IntCounterVec::new(
            Opts::new(
                "meshgate_dead_letter_records_total",
                "Refused records of contracts with a dead-letter topic, by contract topic and outcome: written, failed (the producer got a retriable error) or over_bound (refused without dead-lettering)",
            ),
            &["topic", "outcome"],
        )
        .expect("valid metric");
        let dead_letter_partitions = IntCounterVec::new(
            Opts::new(
                "meshgate_dead_letter_partitions_total",
                "Dead-lettered produce partitions by contract topic and the producer's answer: acknowledged, invalid_record, not_acknowledged (respond: success refused for an idempotent or transactional batch) or retriable",
            ),
            &["topic", "answer"],
        )
        .expect("valid metric");
        let dead_letter_write = Histogram::with_opts(
            HistogramOpts::new(
                "meshgate_dead_letter_write_seconds",
                "Time to write one refused partition's records to its dead-letter topic (the own producer's queue, its retries and the broker's acks=all answer)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let dead_letter_spool_bytes = IntGauge::new(
            "meshgate_dead_letter_spool_bytes",
            "Bytes of the dead-letter spool (own_client.spool) not yet written to their dead-letter topics",
        )
        .expect("valid metric");
        let chargeback_bytes = IntCounterVec::new(
            Opts::new(
                "meshgate_chargeback_bytes_total",
                "Record bytes of contract topics by owning team, principal (named in a contract, else _other) and direction (in: produced, out: fetched)",
            ),
            &["team", "principal", "direction"],
        )
        .expect("valid metric");
        let chargeback_requests = IntCounterVec::new(
            Opts::new(
                "meshgate_chargeback_requests_total",
                "Produce requests and Fetch answers that carried contract topics, by owning team, principal and API",
            ),
            &["team", "principal", "api"],
        )
        .expect("valid metric");
        let produce_records = IntCounterVec::new(
            Opts::new(
                "meshgate_produce_records_total",
                "Produced records judged, by topic and outcome",
            ),
            &["topic", "outcome"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "meshgate_bytes_total",
                "Bytes proxied, by direction (in: client to broker, out: broker to client) and topic; record bytes for contract topics, whole frames otherwise",
            ),
            &["direction", "topic"],
        )
        .expect("valid metric");
        let contracts = ContractFamilies::new(&registry);
        for c in [
            Box::new(bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(policy_reloads.clone()),
            Box::new(policy_generation.clone()),
            Box::new(policy_info.clone()),
            Box::new(policy_rejections.clone()),
            Box::new(policy_would_reject.clone()),
            Box::new(policy_would_reject_last.clone()),
            Box::new(audit_events.clone()),
            Box::new(dead_letter_records.clone()),
            Box::new(dead_letter_spool_bytes.clone()),
            Box::new(dead_letter_partitions.clone()),
            Box::new(dead_letter_write.clone()),
            Box::new(chargeback_bytes.clone()),
            Box::new(chargeback_requests.clone()),
            Box::new(produce_records.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(connections_active.clone()),
            Box::new(connections_refused.clone()),
            Box::new(broker_port_failures.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(tls_client_failures.clone()),
            Box::new(frames_rejected.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        let max_key = ApiKey::iter().map(|k| k as i16).max().unwrap_or(0);
        let per_api = (0..=max_key)
            .map(|key| {
                let name = ApiKey::try_from(key)
                    .map(|k| format!("{k:?}"))
                    .unwrap_or_else(|_| "unknown".to_string());
                ApiMetrics {
                    requests: requests.with_label_values(&[&name]),
                    duration: duration.with_label_values(&[&name]),
                }
            })
            .collect();
        let unknown_api = ApiMetrics {
            requests: requests.with_label_values(&["unknown"]),
            duration: duration.with_label_values(&["unknown"]),
        };
        Self {
            recent_rejections: RecentRejections::default(),
            usage: crate::usage::Usage::default(),
            chargeback: crate::chargeback::Chargeback::default(),
            zones: crate::zone_stats::ZoneStats::new(&registry),
            chargeback_bytes,
            chargeback_requests,
            registry,
            per_api,
            unknown_api,
            connections_active,
            connections_refused,
            broker_port_failures,
            upstream_errors,
            tls_client_failures,
            frames_rejected,
            responses_streamed,
            policy_reloads,
            policy_generation,
            policy_info,
            policy_rejections,
            policy_would_reject,
            policy_would_reject_last,
            audit_events,
            dead_letter_records,
            dead_letter_partitions,
            dead_letter_write,
            dead_letter_spool_bytes,
            produce_accepted_other: produce_records.with_label_values(&["_other", "accepted"]),
            produce_rejected_other: produce_records.with_label_values(&["_other", "rejected"]),
            produce_records,
            bytes_in_other: bytes.with_label_values(&["in", "_other"]),
            bytes_out_other: bytes.with_label_values(&["out", "_other"]),
            bytes,
            contracts,
        }
    }

    /// The metrics of contract `name`, created on first use and kept across reloads.
    pub fn contract(&self, name: &str, topic: &str) -> Arc<ContractMetrics> {
        let f = &self.contracts;
        let mut by_name = f.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ContractMetrics {
                    records_valid: f.records.with_label_values(&[name, "valid"]),
                    records_invalid: f.records.with_label_values(&[name, "invalid"]),
                    records_complete: f.complete.with_label_values(&[name]),
                    requests_ok: f.requests.with_label_values(&[name, "ok"]),
                    requests_failed: f.requests.with_label_values(&[name, "error"]),
                    latency: f.latency.with_label_values(&[name]),
                    bytes_in: self.bytes.with_label_values(&["in", topic]),
                    bytes_out: self.bytes.with_label_values(&["out", topic]),
                    fetch_requests: f.fetch_requests.with_label_values(&[name]),
                    fields_sealed: f.protected_fields.with_label_values(&[name, "sealed"]),
                    fields_opened: f.protected_fields.with_label_values(&[name, "opened"]),
                    fields_masked: f.protected_fields.with_label_values(&[name, "masked"]),
                    fields_unreadable: f.protected_fields.with_label_values(&[name, "unreadable"]),
                    produce_accepted: self.produce_records.with_label_values(&[topic, "accepted"]),
                    produce_rejected: self.produce_records.with_label_values(&[topic, "rejected"]),
                    last_accepted_ms: AtomicU64::new(0),
                    since_ms: now_ms(),
                })
            })
            .clone()
    }

    /// Refreshes the gauges derived from the contracts in force (ratios, freshness, SLA targets),
    /// dropping those of contracts that are gone. Called at scrape time.
    pub fn refresh_contracts<'a>(&self, contracts: impl IntoIterator<Item = ContractFacts<'a>>) {
        let f = &self.contracts;
        for g in [
            &f.validity,
            &f.completeness,
            &f.availability,
            &f.freshness,
            &f.sla_availability,
            &f.sla_latency,
            &f.sla_freshness,
            &f.completeness_target,
            &f.info,
            &f.consumer_lag,
            &f.active_groups,
            &f.active_principals,
            &f.sli_target,
            &f.sli_value,
            &f.sli_met,
        ] {
            g.reset();
        }
        let mut seen = f.sli_seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = std::collections::HashSet::new();
        let now = now_ms();
        let instant = std::time::Instant::now();
        for c in contracts {
            let name = c.name;
            let m = self.contract(name, c.topic);
            let usage = self.usage.product(c.topic, instant);
            f.active_groups
                .with_label_values(&[name])
                .set(usage.active_groups as f64);
            f.active_principals
                .with_label_values(&[name])
                .set(usage.active_principals as f64);
            for g in &usage.groups {
                f.consumer_lag
                    .with_label_values(&[name, &g.group])
                    .set(g.lag as f64);
            }
            f.info
                .with_label_values(&[name, c.owner, c.topic, c.version])
                .set(1.0);
            let (valid, invalid) = (m.records_valid.get(), m.records_invalid.get());
            if valid + invalid > 0 {
                let total = (valid + invalid) as f64;
                f.validity
                    .with_label_values(&[name])
                    .set(valid as f64 / total);
                f.completeness
                    .with_label_values(&[name])
                    .set(m.records_complete.get() as f64 / total);
            }
            let (ok, failed) = (m.requests_ok.get(), m.requests_failed.get());
            if ok + failed > 0 {
                f.availability
                    .with_label_values(&[name])
                    .set(ok as f64 / (ok + failed) as f64);
            }
            let last = m.last_accepted_ms.load(Ordering::Relaxed);
            let since = if last > 0 { last } else { m.since_ms };
            f.freshness
                .with_label_values(&[name])
                .set(now.saturating_sub(since) as f64 / 1000.0);
            if let Some(a) = c.sla_availability {
                f.sla_availability.with_label_values(&[name]).set(a);
            }
            if let Some(l) = c.sla_latency_p99 {
                f.sla_latency
                    .with_label_values(&[name])
                    .set(l.as_secs_f64());
            }
            if let Some(fr) = c.sla_freshness {
                f.sla_freshness
                    .with_label_values(&[name])
                    .set(fr.as_secs_f64());
            }
            if let Some(t) = c.completeness_target {
                f.completeness_target.with_label_values(&[name]).set(t);
            }
            for s in &c.slis {
                for (op, bound) in &s.bounds {
                    f.sli_target
                        .with_label_values(&[name, s.id, s.metric, s.unit, op])
                        .set(*bound);
                }
                if let Some((value, met)) = s.measured {
                    f.sli_value.with_label_values(&[name, s.id]).set(value);
                    f.sli_met
                        .with_label_values(&[name, s.id])
                        .set(if met { 1.0 } else { 0.0 });
                }
                let last = seen
                    .entry((name.to_string(), s.id.to_string()))
                    .or_insert((s.instance, 0, 0));
                if last.0 != s.instance {
                    // A reload compiled this SLI anew: all of its counts are new.
                    *last = (s.instance, 0, 0);
                }
                let good_now = s.records.saturating_sub(s.bad);
                f.sli_records
                    .with_label_values(&[name, s.id, "good"])
                    .inc_by(good_now.saturating_sub(last.1));
                f.sli_records
                    .with_label_values(&[name, s.id, "bad"])
                    .inc_by(s.bad.saturating_sub(last.2));
                *last = (s.instance, good_now.max(last.1), s.bad.max(last.2));
                current.insert((name.to_string(), s.id.to_string()));
            }
        }
        // SLIs no longer in force are forgotten (their series stay, as counters do).
        seen.retain(|k, _| current.contains(k));
    }

    /// The handles for an API key (any i16 from the wire).
    pub fn api(&self, key: i16) -> &ApiMetrics {
        usize::try_from(key)
            .ok()
            .and_then(|k| self.per_api.get(k))
            .unwrap_or(&self.unknown_api)
    }

    /// The registry, for components that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl ContractFamilies {
    fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "meshgate_contract_produce_latency_seconds",
                "Produce latency through meshgate for requests carrying the contract's topic",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["contract"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("metric registered once");
        let c = ["contract"];
        Self {
            records: counter(
                "meshgate_contract_records_total",
                "Records judged against the contract, by result (valid, invalid)",
                &["contract", "result"],
            ),
            complete: counter(
                "meshgate_contract_complete_records_total",
                "Records whose non-optional fields are all present and non-null",
                &c,
            ),
            requests: counter(
                "meshgate_contract_produce_requests_total",
                "Produce requests forwarded for the contract's topic, by outcome (ok, error: an upstream or gateway error)",
                &["contract", "outcome"],
            ),
            latency,
            validity: gauge(
                "meshgate_contract_validity_ratio",
                "Share of judged records that met the contract, since start",
                &c,
            ),
            completeness: gauge(
                "meshgate_contract_completeness_ratio",
                "Share of judged records with every non-optional field present and non-null, since start",
                &c,
            ),
            availability: gauge(
                "meshgate_contract_availability_ratio",
                "Share of forwarded produce requests completed without an upstream or gateway error, since start",
                &c,
            ),
            freshness: gauge(
                "meshgate_contract_freshness_seconds",
                "Seconds since the last accepted record (or since the contract was loaded, when none yet)",
                &c,
            ),
            sla_availability: gauge(
                "meshgate_contract_sla_availability_target",
                "The contract's sla.availability, as a ratio",
                &c,
            ),
            sla_latency: gauge(
                "meshgate_contract_sla_latency_p99_seconds",
                "The contract's sla.latency_p99",
                &c,
            ),
            sla_freshness: gauge(
                "meshgate_contract_sla_freshness_seconds",
                "The contract's sla.freshness",
                &c,
            ),
            completeness_target: gauge(
                "meshgate_contract_completeness_target",
                "The contract's quality.completeness, as a ratio",
                &c,
            ),
            fetch_requests: counter(
                "meshgate_contract_fetch_requests_total",
                "Fetch answers that carried the contract's topic",
                &c,
            ),
            protected_fields: counter(
                "meshgate_contract_protected_fields_total",
                "Protected fields of the contract's records (protect:): sealed on produce; on fetch opened for a pii reader, masked for another principal, or unreadable (their data key gone: shown masked)",
                &["contract", "op"],
            ),
            consumer_lag: gauge(
                "meshgate_contract_consumer_lag_records",
                "Records a consumer group is behind on the contract's topic: end offsets meshgate saw (Fetch and Produce answers) minus the group's commits it forwarded, summed over partitions; at most 200 groups per contract",
                &["contract", "group"],
            ),
            active_groups: gauge(
                "meshgate_contract_active_consumer_groups",
                "Consumer groups that committed offsets of the contract's topic in the last 5 minutes",
                &c,
            ),
            active_principals: gauge(
                "meshgate_contract_active_consumer_principals",
                "Principals that fetched the contract's topic in the last 5 minutes",
                &c,
            ),
            info: gauge(
                "meshgate_contract_info",
                "One series per contract in force, carrying its owner, topic and schema version",
                &["contract", "owner", "topic", "version"],
            ),
            sli_records: counter(
                "meshgate_contract_sli_records_total",
                "Records an SLI of the contract judged (ODCS quality rules over a window), by outcome: good or bad",
                &["contract", "sli", "outcome"],
            ),
            sli_target: gauge(
                "meshgate_contract_sli_target",
                "A bound of an SLI's target: the bad records (or records, for rowCount) per window must be `op` this value",
                &["contract", "sli", "metric", "unit", "op"],
            ),
            sli_value: gauge(
                "meshgate_contract_sli_value",
                "An SLI's bad records since the policy set was loaded, in its unit (rows or percent)",
                &["contract", "sli"],
            ),
            sli_met: gauge(
                "meshgate_contract_sli_met",
                "1 when an SLI's measured value meets its target, 0 when not",
                &["contract", "sli"],
            ),
            sli_seen: Mutex::new(HashMap::new()),
            by_name: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sli_counters_carry_across_reloads_and_targets_follow_the_set_in_force() {
        let m = Metrics::new();
        let facts = |instance: usize, records: u64, bad: u64| ContractFacts {
            name: "orders",
            owner: "checkout",
            topic: "shop.orders.v1",
            version: "",
            sla_availability: None,
            sla_latency_p99: None,
            sla_freshness: None,
            completeness_target: None,
            slis: vec![SliFacts {
                instance,
                id: "few_nulls",
                metric: "nullValues",
                records,
                bad,
                bounds: vec![("<", 5.0)],
                unit: "percent",
                measured: Some((100.0 * bad as f64 / records as f64, false)),
            }],
        };
        let count = |outcome: &str| {
            m.contracts
                .sli_records
                .with_label_values(&["orders", "few_nulls", outcome])
                .get()
        };
        m.refresh_contracts([facts(1, 10, 2)]);
        m.refresh_contracts([facts(1, 30, 3)]);
        assert_eq!((count("good"), count("bad")), (27, 3));
        // A reload: the new SLI counts from zero; the exported counter goes on.
        m.refresh_contracts([facts(2, 4, 1)]);
        assert_eq!((count("good"), count("bad")), (30, 4));
        let text = m.render();
        assert!(text.contains(
            r#"meshgate_contract_sli_target{contract="orders",metric="nullValues",op="<",sli="few_nulls",unit="percent"} 5"#
        ), "{text}");
        assert!(
            text.contains(r#"meshgate_contract_sli_value{contract="orders",sli="few_nulls"} 25"#)
        );
        assert!(text.contains(r#"meshgate_contract_sli_met{contract="orders",sli="few_nulls"} 0"#));
        // The contract leaves: its target and value go, and its count state is forgotten.
        m.refresh_contracts([]);
        let text = m.render();
        assert!(!text.contains("meshgate_contract_sli_target{"));
        assert!(m.contracts.sli_seen.lock().unwrap().is_empty());
    }

    #[test]
    fn recent_rejections_are_bounded_newest_first_and_filtered_by_principal() {
        let ring = RecentRejections::default();
        let r = |i: usize, principal: &str| RecentRejection {
            time_ms: i as u64,
            principal: principal.into(),
            client_id: "c".into(),
            api: "produce",
            topic: "t".into(),
            partition: Some(0),
            policy: "contract",
            rule: "n > 0".into(),
            error_code: 87,
            message: if i == 0 {
                "é".repeat(2000)
            } else {
                format!("m{i}")
            },
        };
        for i in 0..RECENT_REJECTIONS + 10 {
            ring.push(r(i, if i % 2 == 0 { "User:a" } else { "User:b" }));
        }
        let all = ring.list(None, usize::MAX);
        assert_eq!(all.len(), RECENT_REJECTIONS, "bounded");
        assert_eq!(
            all[0].time_ms,
            (RECENT_REJECTIONS + 9) as u64,
            "newest first"
        );
        let b = ring.list(Some("User:b"), 3);
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|x| x.principal == "User:b"));
        let long = RecentRejections::default();
        long.push(r(0, "User:a"));
        let kept = &long.list(None, 1)[0].message;
        assert!(kept.len() <= 1024 + '…'.len_utf8() && kept.ends_with('…'));
    }

    #[test]
    fn api_handles_are_bounded_and_named() {
        let m = Metrics::new();
        m.api(0).requests.inc();
        m.api(-3).requests.inc();
        m.api(31_000).requests.inc();
        let text = m.render();
        assert!(
            text.contains("meshgate_requests_total{api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_requests_total{api=\"unknown\"} 2"),
            "{text}"
        );
    }
}
