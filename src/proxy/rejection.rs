//! One refusal, as the verdict that made it: a `RejectionEvent` is built where a produce
//! partition, a topic to create or a topic change is refused, and this is the one place that
//! counts it (`meshgate_policy_rejections_total`) and logs it (rate-limited over the whole
//! gateway). Audit and dead-letter outputs are meant to hang off `RejectionEvent::emit` too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::{topic_label, Metrics};
use crate::policy::judge::Rejection;
use crate::policy::mode::WouldReject;

/// A refusal, with what a reader of the logs or metrics needs to place it.
#[derive(Debug)]
pub struct RejectionEvent<'a> {
    /// The Kafka API, in snake case (`produce`, `create_topics`, ...).
    pub api: &'static str,
    pub topic: &'a str,
    /// The partition, for Produce.
    pub partition: Option<i32>,
    pub client_id: &'a str,
    /// The topic of the data contract the topic belongs to, if any: the metric's bounded label.
    pub contract_topic: Option<&'a str>,
    pub rejection: &'a Rejection,
}

/// Log lines per second at most, over the whole gateway; the rest are counted and the count is
/// reported with the next line.
const LOG_PER_SEC: u64 = 20;

/// The log's rate limit: lines in the current second, and lines suppressed since the last one.
struct LogBudget {
    window: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written at `now_secs`.
    fn take(&self, now_secs: u64) -> Option<u64> {
        if self.window.swap(now_secs, Ordering::Relaxed) != now_secs {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= LOG_PER_SEC {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

static LOG_BUDGET: LogBudget = LogBudget::new();

impl RejectionEvent<'_> {
    /// Counts the refusal and logs it (within the rate limit).
    pub fn emit(&self, metrics: &Metrics) {
        let r = self.rejection;
        metrics
            .policy_rejections
            .with_label_values(&[topic_label(self.contract_topic), r.policy, &r.rule])
            .inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(suppressed) = LOG_BUDGET.take(now) else {
            return;
        };
        tracing::warn!(
            api = self.api,
            topic = self.topic,
            partition = self.partition,
            client_id = self.client_id,
            policy = r.policy,
            rule = %r.rule,
            error_code = r.error_code,
            suppressed_since_last = suppressed,
            "rejected: {}",
            r.message
        );
    }
}

/// A refusal a shadowed rule would have made: counted in
/// `meshgate_policy_would_reject_total{topic,policy,rule,mode}` and logged (within the same rate
/// limit as refusals), while the data is forwarded.
#[derive(Debug)]
pub struct ShadowEvent<'a> {
    pub api: &'static str,
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub client_id: &'a str,
    pub principal: &'a str,
    pub contract_topic: Option<&'a str>,
    pub would: &'a WouldReject,
}

impl ShadowEvent<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        let w = self.would;
        metrics
            .policy_would_reject
            .with_label_values(&[topic_label(self.contract_topic), w.policy, &w.rule, w.mode])
            .inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        metrics
            .policy_would_reject_last
            .with_label_values(&[w.policy, &w.rule])
            .set(i64::try_from(now).unwrap_or(i64::MAX));
        let Some(suppressed) = LOG_BUDGET.take(now) else {
            return;
        };
        tracing::info!(
            api = self.api,
            topic = self.topic,
            partition = self.partition,
            client_id = self.client_id,
            principal = self.principal,
            policy = w.policy,
            rule = %w.rule,
            mode = w.mode,
            suppressed_since_last = suppressed,
            "would reject (forwarded): {}",
            w.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_allows_a_burst_per_second_and_reports_what_it_held_back() {
        let b = LogBudget::new();
        let allowed = (0..LOG_PER_SEC + 5)
            .filter(|_| b.take(100).is_some())
            .count();
        assert_eq!(allowed as u64, LOG_PER_SEC);
        assert_eq!(
            b.take(101),
            Some(5),
            "the next second's first line reports the 5 held back"
        );
        assert_eq!(b.take(101), Some(0));
    }

    #[test]
    fn every_event_is_counted_even_when_its_line_is_held_back() {
        let metrics = Metrics::new();
        let r = Rejection {
            error_code: 87,
            message: "m".into(),
            record_errors: vec![],
            policy: "contract",
            rule: "order_total > 0".into(),
        };
        for _ in 0..(LOG_PER_SEC * 3) {
            RejectionEvent {
                api: "produce",
                topic: "shop.orders.v1",
                partition: Some(0),
                client_id: "c",
                contract_topic: Some("shop.orders.v1"),
                rejection: &r,
            }
            .emit(&metrics);
        }
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "meshgate_policy_rejections_total{{policy=\"contract\",rule=\"order_total > 0\",topic=\"shop.orders.v1\"}} {}",
                LOG_PER_SEC * 3
            )),
            "{text}"
        );
    }
}
