//! One refusal, as the verdict that made it: a `RejectionEvent` is built where a produce
//! partition, a topic to create or a topic change is refused, and this is the one place that
//! counts it (`meshgate_policy_rejections_total`) and logs it (rate-limited over the whole
//! gateway), and writes it to the audit trail when there is one (`RequestAudit`). Dead-lettering
//! is decided after the event (`enforce`, `dead_letter::prepare`) and recorded once the write is
//! answered (`dead_letter::Settling`).

use std::sync::Arc;

use crate::audit::{AuditEvent, AuditLog};
use crate::generation::Generation;
use crate::log_budget::LOG_BUDGET;
use crate::metrics::{topic_label, Metrics, RecentRejection};
use crate::policy::judge::Rejection;
use crate::policy::mode::WouldReject;
use crate::proxy::identity::Identity;

/// Who sent a request, and under which policy generation: what an audit event holds beside the
/// verdict. Built per request only when the audit trail is on.
#[derive(Debug, Clone)]
pub struct RequestAudit {
    log: AuditLog,
    principal: Arc<str>,
    /// Formatted only when an event is recorded: most requests decide nothing worth recording.
    client_addr: Option<std::net::SocketAddr>,
    generation: u64,
    policy_hash: Arc<str>,
}

/// A decision as the audit trail records it.
pub struct Decided<'a> {
    pub api: &'static str,
    pub resource: String,
    pub client_id: &'a str,
    /// `rejected`, `would_reject` or `forwarded`.
    pub decision: &'static str,
    pub policy: Option<&'static str>,
    pub rule: Option<&'a str>,
    pub mode: Option<&'static str>,
    pub reason: Option<&'a str>,
}

impl RequestAudit {
    pub fn new(log: &AuditLog, identity: &Identity, generation: &Generation) -> Self {
        RequestAudit {
            log: log.clone(),
            principal: identity.principal(),
            client_addr: identity.peer(),
            generation: generation.number,
            policy_hash: generation.hash.clone(),
        }
    }

    pub fn record(&self, d: Decided<'_>) {
        self.log.record(AuditEvent {
            time_ms: crate::audit::now_ms(),
            principal: self.principal.clone(),
            client_id: d.client_id.to_string(),
            client_addr: self.client_addr.map(|a| a.to_string()),
            api: d.api,
            resource: d.resource,
            decision: d.decision,
            policy: d.policy,
            rule: d.rule.map(str::to_string),
            mode: d.mode,
            reason: d.reason.map(str::to_string),
            generation: self.generation,
            policy_hash: self.policy_hash.clone(),
        });
    }
}

/// `topic` or `topic-partition`, as the audit trail names a resource.
fn resource(topic: &str, partition: Option<i32>) -> String {
    match partition {
        Some(p) => format!("{topic}-{p}"),
        None => topic.to_string(),
    }
}

/// Where a decision was made: the API, the resource, who asked, and the audit trail's view.
/// Built once per produce partition or topic; its refusal and would-rejects are emitted from it.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The Kafka API, in snake case (`produce`, `create_topics`, ...).
    pub api: &'static str,
    pub topic: &'a str,
    /// The partition, for Produce.
    pub partition: Option<i32>,
    pub client_id: &'a str,
    pub principal: &'a str,
    /// The topic of the data contract the topic belongs to, if any: the metric's bounded label.
    pub contract_topic: Option<&'a str>,
    /// The audit trail, when it is on.
    pub audit: Option<&'a RequestAudit>,
}

impl Site<'_> {
    /// Writes the decision to the audit trail, when it is on.
    fn audit(
        &self,
        decision: &'static str,
        policy: &'static str,
        rule: &str,
        mode: Option<&'static str>,
        reason: &str,
    ) {
        if let Some(a) = self.audit {
            a.record(Decided {
                api: self.api,
                resource: resource(self.topic, self.partition),
                client_id: self.client_id,
                decision,
                policy: Some(policy),
                rule: Some(rule),
                mode,
                reason: Some(reason),
            });
        }
    }
}

/// A refusal, with where it was made.
#[derive(Debug)]
pub struct RejectionEvent<'a> {
    pub site: Site<'a>,
    pub rejection: &'a Rejection,
}

impl RejectionEvent<'_> {
    /// Counts the refusal and logs it (within the rate limit).
    pub fn emit(&self, metrics: &Metrics) {
        let (r, site) = (self.rejection, &self.site);
        metrics
            .policy_rejections
            .with_label_values(&[topic_label(site.contract_topic), r.policy, &r.rule])
            .inc();
        let now_ms = crate::audit::now_ms();
        metrics.recent_rejections.push(RecentRejection {
            time_ms: now_ms,
            principal: site.principal.to_string(),
            client_id: site.client_id.to_string(),
            api: site.api,
            topic: site.topic.to_string(),
            partition: site.partition,
            policy: r.policy,
            rule: r.rule.clone(),
            error_code: r.error_code,
            message: r.message.clone(),
        });
        site.audit("rejected", r.policy, &r.rule, None, &r.message);
        let Some(suppressed) = LOG_BUDGET.take(now_ms / 1000) else {
            return;
        };
        tracing::warn!(
            api = site.api,
            topic = site.topic,
            partition = site.partition,
            client_id = site.client_id,
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
    pub site: Site<'a>,
    pub would: &'a WouldReject,
}

impl ShadowEvent<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        let (w, site) = (self.would, &self.site);
        metrics
            .policy_would_reject
            .with_label_values(&[topic_label(site.contract_topic), w.policy, &w.rule, w.mode])
            .inc();
        site.audit("would_reject", w.policy, &w.rule, Some(w.mode), &w.message);
        let now = crate::audit::now_ms() / 1000;
        metrics
            .policy_would_reject_last
            .with_label_values(&[w.policy, &w.rule])
            .set(i64::try_from(now).unwrap_or(i64::MAX));
        let Some(suppressed) = LOG_BUDGET.take(now) else {
            return;
        };
        tracing::info!(
            api = site.api,
            topic = site.topic,
            partition = site.partition,
            client_id = site.client_id,
            principal = site.principal,
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
    use crate::log_budget::LOG_PER_SEC;

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
                site: Site {
                    api: "produce",
                    topic: "shop.orders.v1",
                    partition: Some(0),
                    client_id: "c",
                    principal: "User:alice",
                    contract_topic: Some("shop.orders.v1"),
                    audit: None,
                },
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

    #[test]
    fn refusals_and_would_rejects_reach_the_audit_trail_with_who_and_which_policies() {
        let dir = std::env::temp_dir().join(format!("meshgate-rej-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.jsonl");
        let _ = std::fs::remove_file(&file);
        let metrics = Metrics::new();
        let log = crate::audit::AuditLog::start(
            crate::audit::AuditConfig {
                file: Some(file.clone()),
                topic: None,
                max_bytes: 1 << 20,
                keep: 1,
            },
            metrics.audit_counters(),
            None,
        )
        .unwrap();
        let identity =
            Identity::new(Some("User:alice".into())).from_peer("10.0.0.7:5000".parse().unwrap());
        let generation = Generation::new(crate::policy::PolicySet::default(), &metrics);
        let audit = RequestAudit::new(&log, &identity, &generation);
        let r = Rejection {
            error_code: 87,
            message: "breaks rule".into(),
            record_errors: vec![],
            policy: "contract",
            rule: "n > 0".into(),
        };
        RejectionEvent {
            site: Site {
                api: "produce",
                topic: "t",
                partition: Some(2),
                client_id: "c",
                principal: "User:alice",
                contract_topic: Some("t"),
                audit: Some(&audit),
            },
            rejection: &r,
        }
        .emit(&metrics);
        let would = WouldReject {
            policy: "naming",
            rule: "^x$".into(),
            mode: "canary",
            message: "m".into(),
        };
        ShadowEvent {
            site: Site {
                api: "create_topics",
                topic: "Bad",
                partition: None,
                client_id: "c",
                principal: "User:alice",
                contract_topic: None,
                audit: Some(&audit),
            },
            would: &would,
        }
        .emit(&metrics);
        assert!(log.flush(std::time::Duration::from_secs(5)));
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let (a, b) = (&lines[0], &lines[1]);
        assert_eq!(a["decision"], "rejected");
        assert_eq!(a["resource"], "t-2");
        assert_eq!(a["principal"], "User:alice");
        assert_eq!(a["client_addr"], "10.0.0.7:5000");
        assert_eq!(a["policy_hash"], generation.hash.as_ref());
        assert_eq!(b["decision"], "would_reject");
        assert_eq!(
            (&b["mode"], &b["resource"]),
            (&"canary".into(), &"Bad".into())
        );
        assert_eq!(b["prev"], a["hash"]);
        assert_eq!(crate::audit::verify(&[file]).unwrap().lines, 2);
    }
}
