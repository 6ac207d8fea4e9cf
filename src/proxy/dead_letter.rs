//! Dead-letter topics: refused records written to the contract's `on_reject.dead_letter` topic
//! through meshgate's own idempotent producer ([`crate::own_client::producer`]), before the
//! producer is answered. With `own_client.spool` configured ([`Sink::Spooled`]), "written" means
//! appended to meshgate's local dead-letter spool ([`crate::own_client::spool`]), which writes
//! the topic in the background and keeps the letters across restarts until it has.
//!
//! **What is dead-lettered.** A partition of a contract topic refused with INVALID_RECORD by a
//! rule about its records (schema, validity rules, produce rules). Not: refusals about who writes
//! (`producers:`, naming: TOPIC_AUTHORIZATION_FAILED / POLICY_VIOLATION), a partition refused only
//! because another partition of an all-or-nothing request was, or records that cannot be parsed.
//!
//! **Which records.** Each record of the partition is judged alone (`judge_record_with`):
//! - `respond: error`: the records that break a rule; the batch's other records are refused with
//!   it (the producer is told) but not dead-lettered. When no record breaks a rule alone (a
//!   batch-level rule: codec, idempotence, acks), every record is.
//! - `respond: success`, acknowledged: every record of the partition, since the producer is told
//!   all of them were written. `meshgate.refused` tells `record` (it broke the rule) from `batch`
//!   (it was refused with its batch); `meshgate replay` moves the latter back.
//!
//! **Records as they were:** key, value, headers (repeats kept) and timestamp, plus the
//! `meshgate.*` headers of [`HEADERS`]. No header holds a field's value: the reason is the
//! refusal's message, which names fields and types only.
//!
//! **Answers.**
//! - Written: `respond: error` answers INVALID_RECORD as before (the message says where the
//!   records went); `respond: success` answers the partition with no error and offset -1, as
//!   for acks=0 — but only for a batch with no producer id (idempotent producers would see their
//!   sequence numbers skip, OUT_OF_ORDER_SEQUENCE_NUMBER on the next batch) and never for a
//!   transactional batch. Those get INVALID_RECORD; the downgrade is counted.
//! - Not written (no such topic, a refused write, no answer within `own_client.write_timeout_secs`;
//!   with the spool: a full spool or a failed append): REQUEST_TIMED_OUT, retriable, so that the
//!   producer sends the batch again and nothing is lost.
//! - Over the contract's bound (`max_records_per_second`, `max_bytes_per_second`, a token bucket
//!   with one second of burst): refused as without a dead-letter topic, and counted.
//!
//! Per request, partitions are still judged one by one: the accepted ones are written, the refused
//! ones answered (see `enforce`); a transactional producer aborts on the error, which discards its
//! accepted partitions too.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::rejection::{Decided, RequestAudit};
use super::rewrite::merge::ProduceMerge;
pub use crate::generation::DeadLetterBudget as Budget;
use crate::metrics::Metrics;
use crate::own_client::batch::OwnedRecord;
use crate::own_client::producer::{Producer, WriteError, Written};
use crate::own_client::spool::{Spool, Spooled};
use crate::policy::judge::{Rejection, TopicPlan, Writers, INVALID_RECORD, REQUEST_TIMED_OUT};
use crate::policy::{Contract, OnReject, PolicySet, Respond};
use crate::protocol::records::batches;

/// The headers meshgate adds to every dead-lettered record.
pub const HEADERS: [&str; 12] = [
    "meshgate.contract",
    "meshgate.contract.version",
    "meshgate.policy",
    "meshgate.rule",
    "meshgate.reason",
    "meshgate.refused",
    "meshgate.topic",
    "meshgate.partition",
    "meshgate.principal",
    "meshgate.client_id",
    "meshgate.generation",
    "meshgate.policy_hash",
];

/// One refused partition's records, on their way to the dead-letter topic.
pub struct Letter {
    /// The refused (topic, partition), as the merge knows it.
    pub key: (StrBytes, i32),
    pub dead_letter: Arc<str>,
    pub records: Vec<OwnedRecord>,
    /// Whether the partition is acknowledged once written (`respond: success`, allowed).
    pub acknowledge: bool,
    /// `respond: success` was asked but the batch is idempotent or transactional.
    pub success_refused: bool,
    /// The contract topic, the metrics' label.
    pub contract_topic: Arc<str>,
    pub audit: Option<RequestAudit>,
    pub client_id: String,
    pub policy: &'static str,
    pub rule: String,
}

/// Who refused, for the headers and the audit trail.
pub struct Context<'a> {
    pub set: &'a PolicySet,
    pub plan: &'a TopicPlan<'a>,
    pub writers: Writers<'a>,
    pub principal: &'a str,
    pub client_id: &'a str,
    pub generation: u64,
    pub policy_hash: &'a str,
    pub audit: Option<&'a RequestAudit>,
    /// `Limits::max_record_errors`: a rejection listing this many records may have stopped
    /// looking.
    pub max_record_errors: usize,
}

/// A refused partition: where, its record batches as sent, and why.
pub struct Refused<'a> {
    pub topic: &'a StrBytes,
    pub partition: i32,
    pub records: Option<&'a Bytes>,
    pub rejection: &'a Rejection,
}

/// A record's own problem, as `judge_record_with` names it: (policy, rule, message).
type Problem = (&'static str, String, String);

/// What happened to a refused partition of a dead-letter contract before it is answered.
pub enum Prepared {
    /// Its records go to the dead-letter topic.
    Letter(Box<Letter>),
    /// Past the contract's bound: refused as usual.
    OverBound,
    /// Not dead-lettered (not a record refusal, or unreadable records).
    Ineligible,
}

/// Builds the letter for a refused partition, or says why there is none.
pub fn prepare(
    cx: &Context<'_>,
    (contract, on_reject, budget): (&Contract, &OnReject, &Budget),
    refused: Refused<'_>,
) -> Prepared {
    let Refused {
        topic,
        partition,
        records,
        rejection,
    } = refused;
    if rejection.error_code != INVALID_RECORD || rejection.rule == "all_or_nothing" {
        return Prepared::Ineligible;
    }
    let Some(data) = records else {
        return Prepared::Ineligible;
    };
    let text = |s: &str| Some(Bytes::from(s.to_string()));
    let shared: Vec<(Bytes, Option<Bytes>)> = vec![
        (
            Bytes::from_static(HEADERS[0].as_bytes()),
            text(&contract.name),
        ),
        (
            Bytes::from_static(HEADERS[1].as_bytes()),
            text(
                contract
                    .schema
                    .as_ref()
                    .and_then(|s| s.version.as_deref())
                    .unwrap_or(""),
            ),
        ),
        (
            Bytes::from_static(HEADERS[6].as_bytes()),
            text(topic.as_str()),
        ),
        (
            Bytes::from_static(HEADERS[7].as_bytes()),
            text(&partition.to_string()),
        ),
        (
            Bytes::from_static(HEADERS[8].as_bytes()),
            text(cx.principal),
        ),
        (
            Bytes::from_static(HEADERS[9].as_bytes()),
            text(cx.client_id),
        ),
        (
            Bytes::from_static(HEADERS[10].as_bytes()),
            text(&cx.generation.to_string()),
        ),
        (
            Bytes::from_static(HEADERS[11].as_bytes()),
            text(cx.policy_hash),
        ),
    ];
    // The judge lists the records that broke a rule (up to `max_record_errors`, then stops
    // looking): only those, and the ones after a full list, are judged again here, to name
    // each one's own rule.
    let listed: std::collections::HashSet<i32> =
        rejection.record_errors.iter().map(|(i, _)| *i).collect();
    let look_from = if rejection.record_errors.len() >= cx.max_record_errors {
        rejection
            .record_errors
            .iter()
            .map(|(i, _)| *i + 1)
            .max()
            .unwrap_or(0)
    } else {
        i32::MAX
    };
    // One pass over the partition's records: each listed one judged alone; the others are
    // materialized only when `keep_all` (they are dropped for respond: error unless no record
    // breaks a rule alone). None: unreadable records.
    let collect = |keep_all: bool| {
        let (mut idempotent, mut transactional, mut any_own) = (false, false, false);
        let mut index: i32 = -1;
        let mut out: Vec<(OwnedRecord, Option<Problem>)> = Vec::new();
        for batch in batches(data) {
            let batch = batch.ok()?;
            idempotent |= batch.producer_id >= 0;
            transactional |= batch.is_transactional();
            if batch.is_control() {
                continue;
            }
            let inflated = batch.inflate(64 << 20).ok()?;
            // Records of an uncompressed batch are sliced from the request without copying.
            let compressed = inflated.shared().is_some();
            let owned = |b: &[u8]| {
                if compressed {
                    Bytes::copy_from_slice(b)
                } else {
                    data.slice_ref(b)
                }
            };
            for r in inflated.iter() {
                let r = r.ok()?;
                index = index.saturating_add(1);
                let problem = if listed.contains(&index) || index >= look_from {
                    cx.set.judge_record_with(cx.plan, &r, cx.writers)
                } else {
                    None
                };
                any_own |= problem.is_some();
                if problem.is_none() && !keep_all {
                    continue;
                }
                let record = OwnedRecord::from_view(&r, batch.base_timestamp, owned);
                out.push((record, problem));
            }
        }
        Some((out, any_own, idempotent, transactional))
    };
    // Every record is needed for respond: success (an acknowledged partition letters them all)
    // and when no record is judged alone (a batch-level refusal); else only the listed ones,
    // unless none of them breaks a rule alone after all.
    let keep_all =
        on_reject.respond == Respond::Success || (listed.is_empty() && look_from == i32::MAX);
    let Some(mut pass) = collect(keep_all) else {
        return Prepared::Ineligible;
    };
    if !keep_all && !pass.1 {
        let Some(all) = collect(true) else {
            return Prepared::Ineligible;
        };
        pass = all;
    }
    let (mut out, any_own, idempotent, transactional) = pass;
    let acknowledge = on_reject.respond == Respond::Success && !idempotent && !transactional;
    // respond: error keeps only the records that broke a rule (all, for a batch-level refusal).
    if !acknowledge && any_own {
        out.retain(|(_, p)| p.is_some());
    }
    let bytes: usize = out
        .iter()
        .map(|(r, _)| {
            r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
        })
        .sum();
    if out.is_empty() {
        return Prepared::Ineligible;
    }
    if !budget.take(out.len(), bytes, Instant::now()) {
        return Prepared::OverBound;
    }
    let records = out
        .into_iter()
        .map(|(mut record, problem)| {
            let (policy, rule, reason, refused) = match &problem {
                Some((policy, rule, message)) => {
                    (*policy, rule.as_str(), message.as_str(), "record")
                }
                None => (
                    rejection.policy,
                    rejection.rule.as_str(),
                    rejection.message.as_str(),
                    "batch",
                ),
            };
            record.headers.reserve(shared.len() + 4);
            record.headers.extend(shared.iter().cloned());
            for (name, value) in [
                (HEADERS[2], policy),
                (HEADERS[3], rule),
                (HEADERS[4], reason),
                (HEADERS[5], refused),
            ] {
                record
                    .headers
                    .push((Bytes::from_static(name.as_bytes()), text(value)));
            }
            record
        })
        .collect();
    Prepared::Letter(Box::new(Letter {
        key: (topic.clone(), partition),
        dead_letter: on_reject.dead_letter.clone(),
        records,
        acknowledge,
        success_refused: on_reject.respond == Respond::Success && !acknowledge,
        contract_topic: Arc::from(contract.topic.as_str()),
        audit: cx.audit.cloned(),
        client_id: cx.client_id.to_string(),
        policy: rejection.policy,
        rule: rejection.rule.clone(),
    }))
}

/// Where letters go: straight to their topic through the own producer (answered once written
/// there), or through the dead-letter spool in front of it (answered once on meshgate's disk;
/// see [`crate::own_client::spool`]).
#[derive(Clone)]
pub enum Sink {
    Direct(Producer),
    Spooled(Spool),
}

impl From<Producer> for Sink {
    fn from(p: Producer) -> Self {
        Sink::Direct(p)
    }
}

/// Where a letter landed.
enum Landed {
    Topic(Written),
    Spool(Spooled),
}

enum Answer {
    Direct(oneshot::Receiver<Result<Written, WriteError>>),
    Spooled(oneshot::Receiver<Result<Spooled, WriteError>>),
}

impl Answer {
    /// Whether the answer has come (awaiting it would not wait).
    fn is_ready(&self) -> bool {
        match self {
            Answer::Direct(a) => !a.is_empty() || a.is_terminated(),
            Answer::Spooled(a) => !a.is_empty() || a.is_terminated(),
        }
    }

    /// The answer, when `is_ready` said it had come.
    fn take_now(self) -> Result<Landed, WriteError> {
        match self {
            Answer::Direct(mut a) => a
                .try_recv()
                .unwrap_or(Err(WriteError::Stopped))
                .map(Landed::Topic),
            Answer::Spooled(mut a) => a
                .try_recv()
                .unwrap_or(Err(WriteError::Stopped))
                .map(Landed::Spool),
        }
    }

    async fn landed(self) -> Result<Landed, WriteError> {
        match self {
            Answer::Direct(a) => a
                .await
                .unwrap_or(Err(WriteError::Stopped))
                .map(Landed::Topic),
            Answer::Spooled(a) => a
                .await
                .unwrap_or(Err(WriteError::Stopped))
                .map(Landed::Spool),
        }
    }
}

impl Sink {
    fn write(&self, letter: &Letter, records: Vec<OwnedRecord>) -> Answer {
        let (topic, hint) = (letter.dead_letter.clone(), letter.key.1);
        match self {
            Sink::Direct(p) => Answer::Direct(p.write(topic, hint, records)),
            Sink::Spooled(s) => {
                Answer::Spooled(s.write(letter.contract_topic.clone(), topic, hint, records))
            }
        }
    }
}

/// A response owed once the letters of its request are written.
pub struct Settling {
    merge: ProduceMerge,
    /// Each letter (its records handed over), their count, and the producer's answer.
    waits: Vec<(Letter, usize, Answer)>,
    sent: Instant,
    metrics: Arc<Metrics>,
}

impl Settling {
    /// Hands every letter to the producer.
    pub fn send(
        sink: &Sink,
        metrics: Arc<Metrics>,
        merge: ProduceMerge,
        letters: Vec<Letter>,
    ) -> Self {
        let waits = letters
            .into_iter()
            .map(|mut l| {
                let records = std::mem::take(&mut l.records);
                let count = records.len();
                let answer = sink.write(&l, records);
                (l, count, answer)
            })
            .collect();
        Settling {
            merge,
            waits,
            metrics,
            sent: Instant::now(),
        }
    }

    /// Whether every letter is already answered (the spool without `fsync` answers as it
    /// appends), so that [`Settling::settle_answered`] can settle at once and a refused
    /// request's answer needs no task of its own.
    pub fn answered(&self) -> bool {
        self.waits.iter().all(|(_, _, answer)| answer.is_ready())
    }

    /// Settles with the answers already there, taken with `try_recv`, never by polling a future
    /// (a poll may say Pending for a value that is there: tokio's cooperative budget). A letter
    /// not answered after all (call [`Settling::answered`] first) counts as not written: its
    /// partition gets the retriable error.
    pub fn settle_answered(self) -> ProduceMerge {
        let results = self
            .waits
            .into_iter()
            .map(|(letter, count, answer)| (letter, count, answer.take_now()))
            .collect();
        apply(self.merge, results, self.sent, &self.metrics)
    }

    /// Waits for every letter and answers its partition accordingly; returns the merge to
    /// answer the request with.
    pub async fn settle(self) -> ProduceMerge {
        let mut results = Vec::with_capacity(self.waits.len());
        for (letter, count, answer) in self.waits {
            results.push((letter, count, answer.landed().await));
        }
        apply(self.merge, results, self.sent, &self.metrics)
    }
}

/// Answers each letter's partition in `merge` by how its write went; counts and audits it.
fn apply(
    mut merge: ProduceMerge,
    results: Vec<(Letter, usize, Result<Landed, WriteError>)>,
    sent: Instant,
    metrics: &Metrics,
) -> ProduceMerge {
    for (letter, count, result) in results {
        metrics
            .dead_letter_write
            .observe(sent.elapsed().as_secs_f64());
        let (outcome, reason) = match &result {
            Ok(landed) => {
                let (place, outcome) = match landed {
                    Landed::Topic(w) => (
                        format!(
                            "dead-lettered to `{}` partition {} offset {}",
                            letter.dead_letter, w.partition, w.base_offset
                        ),
                        "written",
                    ),
                    Landed::Spool(at) => (
                        format!(
                            "spooled for dead-letter topic `{}` (segment {} offset {})",
                            letter.dead_letter, at.segment, at.offset
                        ),
                        "spooled",
                    ),
                };
                let answer = if letter.acknowledge {
                    merge.acknowledge(&letter.key);
                    "acknowledged"
                } else {
                    merge.note(&letter.key, &format!("; {place}"));
                    if letter.success_refused {
                        "not_acknowledged"
                    } else {
                        "invalid_record"
                    }
                };
                metrics
                    .dead_letter_partitions
                    .with_label_values(&[&letter.contract_topic, answer])
                    .inc();
                (outcome, place)
            }
            Err(e) => {
                let why = format!(
                        "meshgate: the refused records could not be written to dead-letter topic `{}` ({e}); send them again",
                        letter.dead_letter
                    );
                merge.replace(&letter.key, REQUEST_TIMED_OUT, &why);
                metrics
                    .dead_letter_partitions
                    .with_label_values(&[&letter.contract_topic, "retriable"])
                    .inc();
                if let Some(suppressed) = crate::log_budget::allowed() {
                    tracing::warn!(topic = %letter.key.0.as_str(), partition = letter.key.1, dead_letter = %letter.dead_letter, error = %e, suppressed_since_last = suppressed, "dead-letter write failed; answering REQUEST_TIMED_OUT");
                }
                ("failed", why)
            }
        };
        metrics
            .dead_letter_records
            .with_label_values(&[&letter.contract_topic, outcome])
            .inc_by(count as u64);
        if let Some(a) = &letter.audit {
            a.record(Decided {
                api: "produce",
                resource: format!("{}-{}", letter.key.0.as_str(), letter.key.1),
                client_id: &letter.client_id,
                decision: if result.is_ok() {
                    "dead_lettered"
                } else {
                    "dead_letter_failed"
                },
                policy: Some(letter.policy),
                rule: Some(&letter.rule),
                mode: None,
                reason: Some(&reason),
            });
        }
    }
    merge
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::judge::{Limits, PartitionVerdict};
    use crate::protocol::records::test_batch::encode_as;
    use kafka_protocol::records::Compression;
    use std::time::Duration;

    const POLICY: &str = r#"
contract:
  name: orders
  owner: team
  topic: shop.orders.v1
  schema:
    format: json
    version: 1.4.0
    definition: {"type": "record", "name": "O", "fields": [{"name": "total", "type": "double"}, {"name": "email", "type": "string"}]}
    classification: { email: pii }
  on_reject: { dead_letter: shop.orders.dlq, respond: RESPOND }
  quality:
    validity_rules: [total > 0]
"#;

    /// Judges one batch under the policy as the gateway does, then prepares its letter.
    fn letter(respond: &str, values: &[&str], producer_id: i64, records_per_sec: u64) -> Prepared {
        letter_with(respond, values, producer_id, records_per_sec, |_| {})
    }

    /// As `letter`, with the judge's rejection edited first.
    fn letter_with(
        respond: &str,
        values: &[&str],
        producer_id: i64,
        records_per_sec: u64,
        edit: impl FnOnce(&mut Rejection),
    ) -> Prepared {
        let set = crate::policy::load::compile_text("p.yaml", &POLICY.replace("RESPOND", respond));
        let generation = crate::generation::Generation::new(set, &Metrics::new());
        const HEADER: &[(&str, &[u8])] = &[("h", b"1")];
        let specs: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    Some(if i == 0 { &b"k0"[..] } else { &b"k"[..] }),
                    Some(v.as_bytes()),
                    HEADER,
                )
            })
            .collect();
        let data = Bytes::from(encode_as(&specs, Compression::None, producer_id, false));
        let plan = generation
            .plan_topic_as("shop.orders.v1", "User:app")
            .unwrap();
        let mut rejection = match generation.judge_partition(
            &plan,
            -1,
            Some(&data),
            &Limits::default(),
            &generation.decoders,
        ) {
            PartitionVerdict::Reject { rejection, .. } => rejection,
            PartitionVerdict::Accept { .. } => return Prepared::Ineligible,
        };
        edit(&mut rejection);
        let contract = generation.contract_for("shop.orders.v1").unwrap().clone();
        let mut on_reject = contract.on_reject.clone().unwrap();
        on_reject.max_records_per_second = records_per_sec;
        let budget = Budget::new(&on_reject);
        let cx = Context {
            set: &generation,
            plan: &plan,
            writers: Writers {
                decoders: &generation.decoders,
                external: None,
            },
            principal: "User:app",
            client_id: "app-1",
            generation: 7,
            policy_hash: "abc",
            audit: None,
            max_record_errors: 100,
        };
        let topic = StrBytes::from_static_str("shop.orders.v1");
        prepare(
            &cx,
            (&contract, &on_reject, &budget),
            Refused {
                topic: &topic,
                partition: 2,
                records: Some(&data),
                rejection: &rejection,
            },
        )
    }

    fn header<'a>(r: &'a OwnedRecord, name: &str) -> Option<&'a [u8]> {
        r.headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .and_then(|(_, v)| v.as_deref())
    }

    const GOOD: &str = r#"{"total": 5, "email": "a@b.c"}"#;
    const BAD: &str = r#"{"total": -5, "email": "secret@pii.example"}"#;

    #[test]
    fn respond_error_letters_only_the_records_that_broke_a_rule_with_every_header() {
        let Prepared::Letter(l) = letter("error", &[GOOD, BAD, GOOD, BAD], -1, 1000) else {
            panic!("expected a letter");
        };
        assert!(!l.acknowledge && !l.success_refused);
        assert_eq!(&*l.dead_letter, "shop.orders.dlq");
        assert_eq!(l.records.len(), 2);
        let r = &l.records[0];
        assert_eq!(r.value.as_deref(), Some(BAD.as_bytes()));
        assert_eq!(r.timestamp, 1_700_000_000_000);
        assert_eq!(
            r.headers[0],
            (Bytes::from_static(b"h"), Some(Bytes::from_static(b"1")))
        );
        for name in HEADERS {
            assert!(header(r, name).is_some(), "{name}");
        }
        assert_eq!(header(r, "meshgate.contract.version"), Some(&b"1.4.0"[..]));
        assert_eq!(header(r, "meshgate.rule"), Some(&b"total > 0"[..]));
        assert_eq!(header(r, "meshgate.refused"), Some(&b"record"[..]));
        assert_eq!(header(r, "meshgate.partition"), Some(&b"2"[..]));
        assert_eq!(header(r, "meshgate.generation"), Some(&b"7"[..]));
        let all: Vec<u8> = r
            .headers
            .iter()
            .flat_map(|(k, v)| [k.to_vec(), v.clone().unwrap_or_default().to_vec()].concat())
            .collect();
        assert!(!String::from_utf8_lossy(&all).contains("secret@pii.example"));
    }

    #[test]
    fn respond_success_letters_the_whole_batch_but_acknowledges_only_plain_producers() {
        let Prepared::Letter(l) = letter("success", &[GOOD, BAD], -1, 1000) else {
            panic!("expected a letter");
        };
        assert!(l.acknowledge);
        let refused: Vec<_> = l
            .records
            .iter()
            .map(|r| header(r, "meshgate.refused").unwrap())
            .collect();
        assert_eq!(refused, vec![&b"batch"[..], &b"record"[..]]);
        // An idempotent batch (producer id 7) is not acknowledged; only its bad record goes.
        let Prepared::Letter(l) = letter("success", &[GOOD, BAD], 7, 1000) else {
            panic!("expected a letter");
        };
        assert!(!l.acknowledge && l.success_refused);
        assert_eq!(l.records.len(), 1);
    }

    #[test]
    fn when_no_listed_record_breaks_a_rule_alone_every_record_is_lettered() {
        let refused = |l: &Letter| -> Vec<Vec<u8>> {
            l.records
                .iter()
                .map(|r| header(r, "meshgate.refused").unwrap().to_vec())
                .collect()
        };
        // A batch-level refusal lists no record: all of them go, as refused with their batch.
        let Prepared::Letter(l) = letter_with("error", &[GOOD, BAD, GOOD], -1, 1000, |r| {
            r.record_errors.clear()
        }) else {
            panic!("expected a letter");
        };
        assert_eq!(
            refused(&l),
            [b"batch".to_vec(), b"batch".to_vec(), b"batch".to_vec()]
        );
        // The listed record passes alone (a rule about the batch named it): all of them go.
        let Prepared::Letter(l) = letter_with("error", &[GOOD, BAD, GOOD], -1, 1000, |r| {
            r.record_errors = vec![(0, "listed".into())]
        }) else {
            panic!("expected a letter");
        };
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.records[1].value.as_deref(), Some(BAD.as_bytes()));
    }

    #[tokio::test]
    async fn an_answer_is_ready_once_sent_or_abandoned_and_not_before() {
        let (tx, rx) = oneshot::channel();
        let answer = Answer::Spooled(rx);
        assert!(!answer.is_ready());
        tx.send(Ok(Spooled {
            segment: 1,
            offset: 9,
        }))
        .unwrap();
        assert!(answer.is_ready());
        assert!(matches!(answer.landed().await, Ok(Landed::Spool(at)) if at.offset == 9));
        // A dropped sender is answered (Stopped) by `landed`, but `is_ready` does not claim it:
        // the caller takes the waiting path, which is correct either way.
        let (tx, rx) = oneshot::channel::<Result<Written, WriteError>>();
        drop(tx);
        assert_eq!(
            Answer::Direct(rx).landed().await.err(),
            Some(WriteError::Stopped)
        );
    }

    #[test]
    fn past_the_bound_a_partition_is_refused_as_usual() {
        assert!(matches!(
            letter("error", &[BAD, BAD, BAD], -1, 2),
            Prepared::OverBound
        ));
        assert!(matches!(
            letter("error", &[BAD, BAD], -1, 2),
            Prepared::Letter(_)
        ));
    }

    fn bound(records: u64, bytes: u64) -> Budget {
        Budget::new(&OnReject {
            dead_letter: "dlq".into(),
            respond: Respond::Error,
            max_records_per_second: records,
            max_bytes_per_second: bytes,
        })
    }

    #[test]
    fn the_bound_takes_whole_partitions_and_refills_over_a_second() {
        let b = bound(10, 1000);
        let t0 = Instant::now();
        assert!(b.take(6, 100, t0));
        assert!(!b.take(6, 100, t0), "4 records left");
        assert!(b.take(4, 100, t0));
        assert!(!b.take(1, 1, t0));
        // Half a second refills half the bucket, never more than one second's worth.
        assert!(b.take(5, 100, t0 + Duration::from_millis(500)));
        assert!(!b.take(11, 100, t0 + Duration::from_secs(60)));
        assert!(b.take(10, 100, t0 + Duration::from_secs(60)));
        // Bytes bound too.
        let b = bound(1000, 100);
        assert!(!b.take(1, 101, t0));
        assert!(b.take(1, 100, t0));
    }
}
