//! Every metric meshgate exports, defined once. Handles are resolved at start-up (per API key) so
//! the data path never formats a label or takes a registry lock.
//!
//! Label values are bounded: API names come from the protocol crate's fixed list.

use kafka_protocol::messages::ApiKey;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Per-API handles, indexed by API key.
#[derive(Clone)]
pub struct ApiMetrics {
    pub requests: IntCounter,
    pub duration: Histogram,
}

pub struct Metrics {
    registry: Registry,
    per_api: Vec<ApiMetrics>,
    unknown_api: ApiMetrics,
    pub connections_active: IntGauge,
    pub connections_refused: IntCounter,
    pub upstream_errors: IntCounter,
    pub frames_rejected: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub policy_generation: IntGauge,
    pub policy_rejections: IntCounterVec,
    pub produce_records: IntCounterVec,
}

/// The `topic` label for a produce outcome: a contract's topic (bounded by the policy files), or
/// `_other` for topics no contract governs, whose names come from clients.
pub fn topic_label(contract_topic: Option<&str>) -> &str {
    contract_topic.unwrap_or("_other")
}

impl Metrics {
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
        let upstream_errors = IntCounter::new(
            "meshgate_upstream_errors_total",
            "Upstream connect failures, disconnects with requests in flight, and undecodable responses",
        )
        .expect("valid metric");
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
        let policy_rejections = IntCounterVec::new(
            Opts::new(
                "meshgate_policy_rejections_total",
                "Rejected produce partitions and topic creations, by topic, policy and rule",
            ),
            &["topic", "policy", "rule"],
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
        for c in [
            Box::new(policy_reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(policy_generation.clone()),
            Box::new(policy_rejections.clone()),
            Box::new(produce_records.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(connections_active.clone()),
            Box::new(connections_refused.clone()),
            Box::new(upstream_errors.clone()),
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
            registry,
            per_api,
            unknown_api,
            connections_active,
            connections_refused,
            upstream_errors,
            frames_rejected,
            policy_reloads,
            policy_generation,
            policy_rejections,
            produce_records,
        }
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
