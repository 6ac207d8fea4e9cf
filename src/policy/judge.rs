//! Verdicts: what the policy set says about a produce partition or a topic to create.
//!
//! Functions of the policy set and the request bytes: no I/O and no locks. Avro decoders come
//! prepared ([`Writers`]: compiled at load, or by the registry prefetch before judging); an id
//! with none is compiled for the partition at hand. Records are read as borrowed views; the only
//! per-record allocation is decoding a JSON value for a contract check.
//!
//! Order of checks for a produce partition, first failure wins the partition:
//! 1. the topic: naming (unless exempt), then `require_contract` → POLICY_VIOLATION (44), then
//!    the contract's `producers:` against the connection's principal → TOPIC_AUTHORIZATION_FAILED
//!    (29);
//! 2. request and batch facts: acks, codec, idempotence, control batches → INVALID_RECORD (87);
//! 3. each record: produce rules (key, headers, size), then the contract (value decodes, schema,
//!    validity rules) → INVALID_RECORD (87), with `record_errors` for every offending record
//!    (capped) and the first one named in the message.
//!
//! A record with a null value (a tombstone) carries no data: it is exempt from the contract's
//! schema and rules, but not from produce rules.
//!
//! Avro contracts read Confluent-framed values (see `schema::avro_data`): the writer schema comes
//! by id from the built-in registry, must be readable by the contract's schema, and the record is
//! decoded and resolved to the contract's schema before the rules run.

use std::collections::HashMap;
use std::sync::Arc;

use super::mode::{Effect, Mode, Shadowed};
use super::{Contract, Format, PolicySet, ProduceRule};
use crate::fields::{RecordFields, Val};
use crate::protocol::records::{
    batches, Codec, DeflatedBatch, InflateBudget, InflatedRecords, RecordError, RecordView,
};
use crate::schema::avro_data::{self, AvroSchema, Decoders};
use crate::schema::registry_client::RegistryError;

pub const INVALID_RECORD: i16 = 87;

/// An uncompressed batch whose records take at most this many bytes passes a `compression` rule.
/// Producers skip compression when it would not make a batch smaller (librdkafka does, for the
/// small batches of a low-rate producer), so without this allowance a `compression: [lz4, zstd]`
/// rule would refuse well-configured producers whenever traffic is light.
pub const UNCOMPRESSED_ALLOWANCE: usize = 1024;
pub const POLICY_VIOLATION: i16 = 44;

/// Why a partition or topic was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub error_code: i16,
    pub message: String,
    /// (record index within the partition, message), for INVALID_RECORD.
    pub record_errors: Vec<(i32, String)>,
    /// Which kind of policy: `naming`, `require_contract`, `produce`, `contract`, `topics`.
    pub policy: &'static str,
    /// A bounded label for the rule: rule text from a policy file, or a produce-rule key.
    pub rule: String,
}

/// The outcome for one produce partition.
#[derive(Debug)]
pub enum PartitionVerdict {
    Accept {
        records: u64,
        tally: Tally,
        /// Rules in shadow (or on a canary's shadow side) that would have refused it.
        shadowed: Shadowed,
    },
    Reject {
        rejection: Rejection,
        records: u64,
        tally: Tally,
        shadowed: Shadowed,
    },
}

impl PartitionVerdict {
    /// The shadowed rules that would have refused the partition.
    pub fn shadowed(&self) -> &Shadowed {
        match self {
            PartitionVerdict::Accept { shadowed, .. }
            | PartitionVerdict::Reject { shadowed, .. } => shadowed,
        }
    }

    /// Adds would-rejects judged outside the partition (a shadowed `naming.client_ids`).
    pub fn note_shadowed(&mut self, more: &Shadowed) {
        match self {
            PartitionVerdict::Accept { shadowed, .. }
            | PartitionVerdict::Reject { shadowed, .. } => shadowed.extend(more),
        }
    }
}

/// A refusal `r` by a rule in `mode`, for `principal`: `Err(r)` when enforced, else noted in
/// `shadowed` and `Ok(())`.
pub(crate) fn under_mode(
    mode: &Mode,
    principal: &str,
    shadowed: &mut Shadowed,
    r: Rejection,
) -> Result<(), Rejection> {
    let mut modes = Modes {
        principal,
        shadowed,
    };
    if modes.enforces(mode, r.policy, &r.rule, || r.message.clone()) {
        Err(r)
    } else {
        Ok(())
    }
}

/// What the records of a contract topic looked like (zeros for other topics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Records checked against the contract.
    pub judged: u64,
    /// Of those, records that broke it.
    pub invalid: u64,
    /// Of those, records with every non-optional field present and non-null.
    pub complete: u64,
}

/// Resource caps for judging.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decompressed batch accepted.
    pub max_inflated_bytes: usize,
    /// Bytes all the judged batches of one request may inflate to together.
    pub max_inflated_request_bytes: usize,
    /// Records one request may hold over all its judged batches.
    pub max_request_records: u64,
    /// `record_errors` entries per partition at most.
    pub max_record_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_inflated_bytes: 64 * 1024 * 1024,
            max_inflated_request_bytes: DEFAULT_MAX_INFLATED_REQUEST_BYTES,
            max_request_records: DEFAULT_MAX_REQUEST_RECORDS,
            max_record_errors: 100,
        }
    }
}

/// The default per-request inflate budget: 128 MiB. Producers' request limits are about 1 MB
/// (librdkafka `message.max.bytes`, Java `max.request.size`), so this allows a compression
/// ratio of over 100 to 1 on a full request.
pub const DEFAULT_MAX_INFLATED_REQUEST_BYTES: usize = 128 * 1024 * 1024;
/// The default per-request record budget.
pub const DEFAULT_MAX_REQUEST_RECORDS: u64 = 2_000_000;

/// Inflates the batches of one request within the request's budget, and each batch at most once:
/// the external-registry scan and the judge read the same decompressed bytes.
pub struct RequestInflater {
    budget: InflateBudget,
    max_batch: usize,
    /// Keep what was inflated, for a second reader (only when one will come).
    keep: bool,
    kept: HashMap<usize, Kept>,
    /// Batches decompressed (or checked, when not compressed) for this request so far.
    inflated: u32,
}

enum Kept {
    /// Not compressed: read in place, already charged to the budget.
    Plain,
    Inflated(InflatedRecords<'static>),
    Failed(RecordError),
}

impl RequestInflater {
    /// A fresh budget from `limits`; `keep` when the request's batches will be read twice.
    pub fn new(limits: &Limits, keep: bool) -> Self {
        Self {
            budget: InflateBudget::new(
                limits.max_inflated_request_bytes,
                limits.max_request_records,
            ),
            max_batch: limits.max_inflated_bytes,
            keep,
            kept: HashMap::new(),
            inflated: 0,
        }
    }

    /// How many times a batch of this request was inflated: once per batch, however many
    /// readers (the registry scan, the judge) it had.
    pub fn batches_inflated(&self) -> u32 {
        self.inflated
    }

    /// The batch's records, decompressed once per request.
    pub fn inflate<'a>(
        &mut self,
        batch: &DeflatedBatch<'a>,
    ) -> Result<InflatedRecords<'a>, RecordError> {
        if !self.keep {
            self.inflated += 1;
            return batch.inflate_within(self.max_batch, &mut self.budget);
        }
        // A batch is identified by where it sits in the request's bytes.
        let key = batch.bytes.as_ptr() as usize;
        match self.kept.get(&key) {
            Some(Kept::Plain) => return batch.inflate(usize::MAX),
            Some(Kept::Inflated(r)) => return Ok(r.clone()),
            Some(Kept::Failed(e)) => return Err(e.clone()),
            None => {}
        }
        self.inflated += 1;
        let result = batch.inflate_within(self.max_batch, &mut self.budget);
        let kept = match &result {
            Ok(r) => r.shared().map_or(Kept::Plain, Kept::Inflated),
            Err(e) => Kept::Failed(e.clone()),
        };
        self.kept.insert(key, kept);
        result
    }
}

/// Writer schemas fetched from an external registry for one request: the ids found, and the ids
/// the registry could not be asked about (their records fail with a retriable error).
#[derive(Debug, Default)]
pub struct ExternalWriters {
    pub known: HashMap<u32, Arc<AvroSchema>>,
    pub unavailable: HashMap<u32, RegistryError>,
    /// The decoders of the known writers, by (contract index, id), compiled (or found in the
    /// generation's cache) by the prefetch, so the judge takes no lock for them.
    pub decoders: HashMap<(usize, u32), avro_data::Compiled>,
}

/// Where the judge finds writer schemas and their compiled decoders.
#[derive(Debug, Clone, Copy)]
pub struct Writers<'a> {
    /// The generation's decoders compiled at load.
    pub decoders: &'a Decoders,
    /// What the registry prefetch found, when an external registry is configured.
    pub external: Option<&'a ExternalWriters>,
}

impl Writers<'_> {
    /// The decoder compiled before judging for `id` read by contract `contract`. No lock.
    pub fn prepared(&self, contract: usize, id: u32) -> Option<avro_data::Compiled> {
        self.external
            .and_then(|e| e.decoders.get(&(contract, id)))
            .or_else(|| self.decoders.compiled_at_load(contract, id))
            .cloned()
    }
}

/// TOPIC_AUTHORIZATION_FAILED: the principal may not produce to the topic.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// REQUEST_TIMED_OUT: retriable, so a producer tries again once the registry answers.
pub const REQUEST_TIMED_OUT: i16 = 7;

/// What applies to one topic of a produce request, resolved once per topic.
pub struct TopicPlan<'a> {
    pub topic: &'a str,
    pub contract: Option<&'a Arc<Contract>>,
    rules: Vec<&'a ProduceRule>,
    /// Who sent the request: canary rules enforce for some principals only.
    principal: &'a str,
    /// Topic-level rules in shadow that would have refused the topic.
    shadowed: Shadowed,
}

impl<'a> TopicPlan<'a> {
    fn inspects_records(&self) -> bool {
        self.contract.is_some() || self.rules.iter().any(|r| r.inspects_records())
    }
}

impl PolicySet {
    /// Resolves the policies for a topic, or refuses the topic itself.
    pub fn plan_topic<'a>(&'a self, topic: &'a str) -> Result<TopicPlan<'a>, Rejection> {
        self.plan_topic_for(topic, "")
    }

    /// [`plan_topic`](Self::plan_topic) for a request sent by `principal` (for canary rules).
    fn plan_topic_for<'a>(
        &'a self,
        topic: &'a str,
        principal: &'a str,
    ) -> Result<TopicPlan<'a>, Rejection> {
        let mut shadowed = Shadowed::default();
        let exempt = self.naming.as_ref().is_some_and(|n| n.is_exempt(topic));
        if let Some(n) = self.naming.as_ref().filter(|n| !n.mode.is_off()) {
            if !exempt && !n.pattern.is_match(topic) {
                let r = Rejection {
                    error_code: POLICY_VIOLATION,
                    message: format!(
                        "meshgate: topic `{topic}` breaks the naming rule `{}` ({})",
                        n.pattern.as_str(),
                        n.origin
                    ),
                    record_errors: vec![],
                    policy: "naming",
                    rule: n.pattern.as_str().to_string(),
                };
                under_mode(&n.mode, principal, &mut shadowed, r)?;
            }
        }
        let contract = self.contract_for(topic);
        if let Some(t) = self.topics.as_ref().filter(|t| !t.mode.is_off()) {
            if t.require_contract && contract.is_none() && !exempt {
                let r = Rejection {
                    error_code: POLICY_VIOLATION,
                    message: format!(
                        "meshgate: topic `{topic}` has no data contract, and require_contract is set ({})",
                        t.origin
                    ),
                    record_errors: vec![],
                    policy: "require_contract",
                    rule: "require_contract".into(),
                };
                under_mode(&t.mode, principal, &mut shadowed, r)?;
            }
        }
        let rules = self
            .produce
            .iter()
            .filter(|r| !r.mode.is_off() && r.applies_to(topic))
            .collect();
        Ok(TopicPlan {
            topic,
            contract,
            rules,
            principal,
            shadowed,
        })
    }

    /// [`plan_topic`](Self::plan_topic) for a produce by `principal`: a contract with
    /// `producers:` refuses everyone else with TOPIC_AUTHORIZATION_FAILED, before any record is
    /// read.
    pub fn plan_topic_as<'a>(
        &'a self,
        topic: &'a str,
        principal: &'a str,
    ) -> Result<TopicPlan<'a>, Rejection> {
        let mut plan = self.plan_topic_for(topic, principal)?;
        if let Some(c) = plan.contract.filter(|c| !c.mode.is_off()) {
            if !c.producers.is_empty() && !c.producers.iter().any(|p| **p == *principal) {
                let r = Rejection {
                    error_code: TOPIC_AUTHORIZATION_FAILED,
                    message: format!(
                        "meshgate: topic `{topic}`: `{principal}` may not produce to data product `{}`; its producers are {} ({})",
                        c.name,
                        c.producers.join(", "),
                        c.origin
                    ),
                    record_errors: vec![],
                    policy: "producers",
                    rule: "producers".into(),
                };
                under_mode(&c.mode, principal, &mut plan.shadowed, r)?;
            }
        }
        Ok(plan)
    }

    /// Judges one partition's records under a topic plan, with writer schemas from the built-in
    /// registry.
    pub fn judge_partition(
        &self,
        plan: &TopicPlan<'_>,
        acks: i16,
        records: Option<&[u8]>,
        limits: &Limits,
        decoders: &Decoders,
    ) -> PartitionVerdict {
        let mut inflater = RequestInflater::new(limits, false);
        let writers = Writers {
            decoders,
            external: None,
        };
        self.judge_partition_with(plan, acks, records, limits, writers, &mut inflater)
    }

    /// The first enforced problem with one record under `plan`, as (policy, rule, message): its
    /// produce rules (key, headers, size), then its contract. For tools that judge records one by
    /// one (`meshgate replay --dry-run`); batch-level rules are judged with `judge_partition`.
    pub fn judge_record(
        &self,
        plan: &TopicPlan<'_>,
        record: &RecordView<'_>,
        decoders: &Decoders,
    ) -> Option<(&'static str, String, String)> {
        let writers = Writers {
            decoders,
            external: None,
        };
        self.judge_record_with(plan, record, writers)
    }

    /// As [`judge_record`](Self::judge_record), with the writer schemas of an external registry
    /// when one is configured (the dead-letter path judges each record of a refused partition).
    pub fn judge_record_with(
        &self,
        plan: &TopicPlan<'_>,
        record: &RecordView<'_>,
        writers: Writers<'_>,
    ) -> Option<(&'static str, String, String)> {
        let limits = Limits::default();
        let mut inflater = RequestInflater::new(&limits, false);
        let mut judge = PartitionJudge::new(self, plan, writers, &mut inflater, &limits);
        judge.check_record(record).map(|p| {
            let message = p.message();
            let (policy, rule) = p.labels();
            (policy, rule, message)
        })
    }

    /// The Avro decoders of this set, compiled for every schema id its built-in registry knows:
    /// kept beside the set (in its [`Generation`](crate::generation::Generation)), not in it.
    pub fn compile_decoders(&self) -> Decoders {
        let readers = self
            .contracts
            .iter()
            .filter_map(|c| c.avro_reader.as_ref().map(|r| (c.index, r)));
        Decoders::at_load(readers, &self.avro_writers)
    }

    /// Judges one partition; `external` replaces the built-in registry when one is configured,
    /// and `inflater` holds the request's decompression budget.
    pub fn judge_partition_with(
        &self,
        plan: &TopicPlan<'_>,
        acks: i16,
        records: Option<&[u8]>,
        limits: &Limits,
        writers: Writers<'_>,
        inflater: &mut RequestInflater,
    ) -> PartitionVerdict {
        let mut judge = PartitionJudge::new(self, plan, writers, inflater, limits);
        if let Err(r) = judge.request_level(acks) {
            return PartitionVerdict::Reject {
                rejection: r,
                records: count_records(records),
                tally: Tally::default(),
                shadowed: judge.shadowed,
            };
        }
        let outcome = judge.records(records.unwrap_or_default());
        let (count, tally) = (judge.count, judge.tally);
        match outcome {
            Err(rejection) => PartitionVerdict::Reject {
                rejection,
                records: count.max(count_records(records)),
                tally,
                shadowed: judge.shadowed,
            },
            Ok(()) => {
                let (rejection, shadowed) = judge.into_rejection();
                match rejection {
                    Some(rejection) => PartitionVerdict::Reject {
                        rejection,
                        records: count,
                        tally,
                        shadowed,
                    },
                    None => PartitionVerdict::Accept {
                        records: count,
                        tally,
                        shadowed,
                    },
                }
            }
        }
    }
}

/// The record count declared by the batch headers (for metrics of partitions not inspected).
pub fn count_records(records: Option<&[u8]>) -> u64 {
    batches(records.unwrap_or_default())
        .map_while(Result::ok)
        .map(|b| b.records_count.max(0) as u64)
        .sum()
}

struct PartitionJudge<'p, 'a> {
    set: &'p PolicySet,
    writers: Writers<'p>,
    inflater: &'p mut RequestInflater,
    /// Per batch: whether the contract can read each writer schema id seen.
    /// The Avro decoders looked up for this batch, by writer schema id.
    avro_decoders: HashMap<u32, avro_data::Compiled>,
    plan: &'p TopicPlan<'a>,
    limits: &'p Limits,
    errors: Vec<(i32, String)>,
    /// The first offending record, and the message naming it.
    first: Option<(RecordProblem, String)>,
    count: u64,
    tally: Tally,
    /// Shadowed rules that would have refused the partition.
    shadowed: Shadowed,
}

impl<'p, 'a> PartitionJudge<'p, 'a> {
    fn new(
        set: &'p PolicySet,
        plan: &'p TopicPlan<'a>,
        writers: Writers<'p>,
        inflater: &'p mut RequestInflater,
        limits: &'p Limits,
    ) -> Self {
        PartitionJudge {
            set,
            writers,
            inflater,
            avro_decoders: HashMap::new(),
            plan,
            limits,
            errors: Vec::new(),
            first: None,
            count: 0,
            tally: Tally::default(),
            shadowed: plan.shadowed.clone(),
        }
    }

    /// `Err(r)` when `mode` enforces for the request's principal, else `r` noted as shadowed.
    fn under_mode(&mut self, mode: &Mode, r: Rejection) -> Result<(), Rejection> {
        under_mode(mode, self.plan.principal, &mut self.shadowed, r)
    }

    fn request_level(&mut self, acks: i16) -> Result<(), Rejection> {
        let plan = self.plan;
        for rule in &plan.rules {
            if let Some(want) = rule.acks {
                let ok = match want {
                    -1 => acks == -1,
                    1 => acks == -1 || acks == 1,
                    _ => true,
                };
                if !ok {
                    let want_text = if want == -1 { "all" } else { "1" };
                    let r = self.batch_rejection(
                        rule,
                        "acks",
                        format!("requires acks={want_text}, the request has acks={acks}"),
                    );
                    self.under_mode(&rule.mode, r)?;
                }
            }
        }
        Ok(())
    }

    fn batch_rejection(&self, rule: &ProduceRule, key: &str, why: String) -> Rejection {
        Rejection {
            error_code: INVALID_RECORD,
            message: format!(
                "meshgate: produce rule ({}) `{key}`: {why} (topic `{}`)",
                rule.origin, self.plan.topic
            ),
            record_errors: vec![],
            policy: "produce",
            rule: key.to_string(),
        }
    }

    fn malformed(&self, e: RecordError) -> Rejection {
        Rejection {
            error_code: INVALID_RECORD,
            message: format!(
                "meshgate: malformed record batch for topic `{}`: {e}",
                self.plan.topic
            ),
            record_errors: vec![],
            policy: "produce",
            rule: "malformed_batch".into(),
        }
    }

    fn records(&mut self, bytes: &[u8]) -> Result<(), Rejection> {
        let mut index: usize = 0;
        for batch in batches(bytes) {
            let batch = batch.map_err(|e| self.malformed(e))?;
            if batch.is_control() {
                return Err(
                    self.malformed_text("control batches are written by brokers, not producers")
                );
            }
            let codec = batch.codec().map_err(|e| self.malformed(e))?;
            let plan = self.plan;
            for rule in &plan.rules {
                if let Some(allowed) = &rule.compression {
                    let small_plain =
                        codec == Codec::None && batch.payload.len() <= UNCOMPRESSED_ALLOWANCE;
                    if !allowed.contains(&codec) && !small_plain {
                        let names: Vec<&str> = allowed.iter().map(|c| c.name()).collect();
                        let r = self.batch_rejection(
                            rule,
                            "compression",
                            format!("codec `{}` is not one of {names:?}", codec.name()),
                        );
                        self.under_mode(&rule.mode, r)?;
                    }
                }
                if rule.idempotence_required && batch.producer_id < 0 {
                    let r = self.batch_rejection(
                        rule,
                        "idempotence",
                        "requires an idempotent producer (enable.idempotence=true); the batch has no producer id".into(),
                    );
                    self.under_mode(&rule.mode, r)?;
                }
            }
            if !self.plan.inspects_records() {
                self.count += batch.records_count.max(0) as u64;
                index += batch.records_count.max(0) as usize;
                continue;
            }
            let inflated = self.inflater.inflate(&batch).map_err(|e| match e {
                RecordError::RequestBudget { .. } => self.over_budget(e),
                e => self.malformed(e),
            })?;
            for record in inflated.iter() {
                let record = record.map_err(|e| self.malformed(e))?;
                self.count += 1;
                self.record(index, &record);
                index += 1;
            }
        }
        Ok(())
    }

    /// The request as a whole decompresses to more than the gateway judges for one request.
    fn over_budget(&self, e: RecordError) -> Rejection {
        Rejection {
            error_code: INVALID_RECORD,
            message: format!(
                "meshgate: topic `{}`: {e}; send smaller requests or raise the gateway's limits",
                self.plan.topic
            ),
            record_errors: vec![],
            policy: "limits",
            rule: "request_budget".into(),
        }
    }

    fn malformed_text(&self, why: &str) -> Rejection {
        Rejection {
            error_code: INVALID_RECORD,
            message: format!("meshgate: topic `{}`: {why}", self.plan.topic),
            record_errors: vec![],
            policy: "produce",
            rule: "malformed_batch".into(),
        }
    }

    fn record(&mut self, index: usize, r: &RecordView<'_>) {
        if self.errors.len() >= self.limits.max_record_errors {
            return;
        }
        if let Some(problem) = self.check_record(r) {
            let message = problem.message();
            self.errors
                .push((i32::try_from(index).unwrap_or(i32::MAX), message.clone()));
            if self.first.is_none() {
                self.first = Some((problem, format!("record {index}: {message}")));
            }
        }
    }

    /// The first problem with one record.
    fn check_record(&mut self, r: &RecordView<'_>) -> Option<RecordProblem> {
        self.record_rules(r)
            .map(RecordProblem::Invalid)
            .or_else(|| {
                let contract = self.plan.contract.filter(|c| c.judges_records())?;
                let value = r.value?; // tombstones carry no data
                let external = self.writers.external;
                if let (Some(ext), Some((id, _))) = (external, avro_data::unframe(value)) {
                    if let Some(why) = ext.unavailable.get(&id) {
                        return Some(RecordProblem::RegistryUnavailable {
                            id,
                            why: why.clone(),
                        });
                    }
                }
                let known = external.map_or(&self.set.avro_writers, |e| &e.known);
                let decoders = self.writers;
                let prepared = |id| decoders.prepared(contract.index, id);
                let mut modes = Modes {
                    principal: self.plan.principal,
                    shadowed: &mut self.shadowed,
                };
                let (problem, complete) = check_contract(
                    contract,
                    value,
                    known,
                    &mut self.avro_decoders,
                    &prepared,
                    &mut modes,
                );
                self.tally.judged += 1;
                self.tally.invalid += u64::from(problem.is_some());
                self.tally.complete += u64::from(complete);
                problem.map(RecordProblem::Invalid)
            })
    }

    /// The produce rules about one record: the first enforced failure (policy, rule label,
    /// message); shadowed failures are noted.
    fn record_rules(&mut self, r: &RecordView<'_>) -> Option<(&'static str, String, String)> {
        let plan = self.plan;
        let mut modes = Modes {
            principal: plan.principal,
            shadowed: &mut self.shadowed,
        };
        for rule in &plan.rules {
            if rule.key_required && r.key.is_none() {
                let message = || format!("produce rule ({}) `key`: a key is required", rule.origin);
                if modes.enforces(&rule.mode, "produce", "key", message) {
                    return Some(("produce", "key".into(), message()));
                }
            }
            for h in &rule.headers {
                if !r.has_header(h) {
                    let message = || {
                        format!(
                            "produce rule ({}) `headers`: header `{h}` is missing",
                            rule.origin
                        )
                    };
                    if modes.enforces(&rule.mode, "produce", "headers", message) {
                        return Some(("produce", "headers".into(), message()));
                    }
                }
            }
            if let Some(max) = rule.max_record_bytes {
                if r.size > max {
                    let message = || {
                        format!(
                            "produce rule ({}) `max_record_bytes`: record is {} bytes, over {max}",
                            rule.origin, r.size
                        )
                    };
                    if modes.enforces(&rule.mode, "produce", "max_record_bytes", message) {
                        return Some(("produce", "max_record_bytes".into(), message()));
                    }
                }
            }
        }
        None
    }

    fn into_rejection(self) -> (Option<Rejection>, Shadowed) {
        let Some((problem, message)) = self.first else {
            return (None, self.shadowed);
        };
        let more = (self.tally.invalid.max(self.errors.len() as u64)).saturating_sub(1);
        let suffix = if more > 0 {
            format!(" (and {more} more record(s))")
        } else {
            String::new()
        };
        let error_code = problem.error_code();
        let (policy, rule) = problem.labels();
        let rejection = Rejection {
            error_code,
            message: format!("meshgate: topic `{}`: {message}{suffix}", self.plan.topic),
            record_errors: self.errors,
            policy,
            rule,
        };
        (Some(rejection), self.shadowed)
    }
}

/// Why one record is refused.
#[derive(Debug)]
enum RecordProblem {
    /// It breaks a produce rule or its contract: (policy, rule label, message).
    Invalid((&'static str, String, String)),
    /// The external registry could not say what its schema id is: a retriable refusal.
    RegistryUnavailable { id: u32, why: RegistryError },
}

impl RecordProblem {
    fn error_code(&self) -> i16 {
        match self {
            RecordProblem::Invalid(_) => INVALID_RECORD,
            RecordProblem::RegistryUnavailable { .. } => REQUEST_TIMED_OUT,
        }
    }

    /// (policy, rule) labels.
    fn labels(self) -> (&'static str, String) {
        match self {
            RecordProblem::Invalid((policy, rule, _)) => (policy, rule),
            RecordProblem::RegistryUnavailable { .. } => ("registry", "unavailable".into()),
        }
    }

    fn message(&self) -> String {
        match self {
            RecordProblem::Invalid((_, _, message)) => message.clone(),
            RecordProblem::RegistryUnavailable { id, why } => {
                format!("the schema registry did not answer for schema id {id} ({why}); retry")
            }
        }
    }
}

/// Resolves rule modes for the request's principal, noting shadowed failures.
struct Modes<'m> {
    principal: &'m str,
    shadowed: &'m mut Shadowed,
}

impl Modes<'_> {
    /// Whether a failure of a rule in `mode` refuses the record. A shadowed failure is noted
    /// (its message built once per partition); an `off` rule's failure is not even noted.
    fn enforces(
        &mut self,
        mode: &Mode,
        policy: &'static str,
        rule: &str,
        message: impl FnOnce() -> String,
    ) -> bool {
        if mode.is_off() {
            return false;
        }
        match mode.effect(self.principal) {
            Effect::Enforce => true,
            Effect::Shadow(label) => {
                self.shadowed.note(policy, rule, label, message);
                false
            }
        }
    }
}

/// The first way a record value breaks its contract (policy, rule label, message), and whether
/// the record is complete (every non-optional field present and non-null). Failures of shadowed
/// checks are noted in `modes` and judging goes on, as if they had passed.
fn check_contract(
    c: &Contract,
    value: &[u8],
    avro_writers: &HashMap<u32, Arc<AvroSchema>>,
    avro_decoders: &mut HashMap<u32, avro_data::Compiled>,
    prepared: &dyn Fn(u32) -> Option<avro_data::Compiled>,
    modes: &mut Modes<'_>,
) -> (Option<(&'static str, String, String)>, bool) {
    // A schema failure ends the record's checks (its rules cannot read it), enforced or not.
    let schema_problem = |modes: &mut Modes<'_>, why: &dyn std::fmt::Display| {
        let message = || {
            format!(
                "breaks contract `{}` schema ({}): {why}",
                c.name,
                c.reference()
            )
        };
        modes
            .enforces(&c.mode, "contract", "schema", message)
            .then(|| ("contract", "schema".to_string(), message()))
    };
    match c.schema.as_ref() {
        Some(s) if s.format == Format::Avro => {
            let Some(reader) = c.avro_reader.as_ref() else {
                let why = "the contract's Avro schema did not load";
                return (schema_problem(modes, &why), false);
            };
            match avro_data::decode(value, avro_writers, reader, avro_decoders, prepared) {
                Ok(record) => judge_record(c, &record, modes),
                Err(why) => (schema_problem(modes, &why), false),
            }
        }
        _ => {
            // The one-pass projection judges a valid record; anything else takes the full
            // parse, which is the reference and writes the message.
            if let Some(record) = c.json_projection.as_ref().and_then(|p| p.project(value)) {
                return judge_record(c, &record, modes);
            }
            let json: serde_json::Value = match serde_json::from_slice(value) {
                Ok(v) => v,
                Err(e) => {
                    let why = format_args!("value is not JSON: {e}");
                    return (schema_problem(modes, &why), false);
                }
            };
            if let Some(check) = c.schema.as_ref().and_then(|s| s.json.as_ref()) {
                if let Err(why) = check.check(&json) {
                    return (schema_problem(modes, &why), is_complete(c, &json));
                }
            }
            judge_record(c, &json, modes)
        }
    }
}

fn is_complete(c: &Contract, record: &dyn RecordFields) -> bool {
    c.required_fields.iter().all(|f| {
        !matches!(
            record.get(std::slice::from_ref(f)),
            Val::Missing | Val::Null
        )
    })
}

/// The contract's validity rules on a decoded record, and its completeness.
fn judge_record(
    c: &Contract,
    record: &dyn RecordFields,
    modes: &mut Modes<'_>,
) -> (Option<(&'static str, String, String)>, bool) {
    let complete = is_complete(c, record);
    for r in c.rules.iter().filter(|r| !r.mode.is_off()) {
        if !r.rule.passes(record) {
            let message = || {
                format!(
                    "breaks contract `{}` rule `{}` ({}{})",
                    c.name,
                    r.rule.text,
                    r.origin,
                    c.version_and_link()
                )
            };
            if modes.enforces(&r.mode, "contract", &r.rule.text, message) {
                return (Some(("contract", r.rule.text.clone(), message())), complete);
            }
        }
    }
    for sli in &c.slis {
        sli.observe(record);
    }
    (None, complete)
}

/// A topic a client asks to create.
pub struct NewTopic<'a> {
    pub name: &'a str,
    /// -1 when the broker default is requested.
    pub num_partitions: i32,
    /// -1 when the broker default is requested.
    pub replication_factor: i16,
    pub configs: Vec<(&'a str, Option<&'a str>)>,
}

impl PolicySet {
    /// [`judge_new_topic_as`](Self::judge_new_topic_as) for an unnamed principal, shadows dropped.
    #[cfg(test)]
    pub fn judge_new_topic(&self, t: &NewTopic<'_>) -> Result<(), Rejection> {
        self.judge_new_topic_as(t, "", &mut Shadowed::default())
    }

    /// Judges one topic of a CreateTopics request sent by `principal`. Refusals of rules in
    /// shadow are noted in `shadowed` instead.
    pub fn judge_new_topic_as(
        &self,
        t: &NewTopic<'_>,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Result<(), Rejection> {
        let reject = |rule: &str, message: String| Rejection {
            error_code: POLICY_VIOLATION,
            message: format!("meshgate: topic `{}`: {message}", t.name),
            record_errors: vec![],
            policy: "topics",
            rule: rule.to_string(),
        };
        // Naming and require_contract are shared with produce.
        let plan = self.plan_topic_for(t.name, principal).map_err(|mut r| {
            r.message = r
                .message
                .replacen("meshgate: ", "meshgate: cannot create: ", 1);
            r
        })?;
        shadowed.extend(&plan.shadowed);
        let Some(rules) = self.topics.as_ref().filter(|t| !t.mode.is_off()) else {
            return Ok(());
        };
        let verdict = Self::check_new_topic(rules, t, reject);
        match verdict {
            Ok(()) => Ok(()),
            Err(r) => under_mode(&rules.mode, principal, shadowed, r),
        }
    }

    /// The topic rules on a new topic, all enforced: the first refusal.
    fn check_new_topic(
        rules: &super::TopicRules,
        t: &NewTopic<'_>,
        reject: impl Fn(&str, String) -> Rejection,
    ) -> Result<(), Rejection> {
        if rules.partitions.is_set() {
            if t.num_partitions < 0 {
                return Err(reject("partitions", format!("the partition count must be given explicitly: the topic rules ({}) require {}", rules.origin, rules.partitions)));
            }
            if !rules.partitions.contains(t.num_partitions as i64) {
                return Err(reject(
                    "partitions",
                    format!(
                        "{} partitions, but the topic rules ({}) require {}",
                        t.num_partitions, rules.origin, rules.partitions
                    ),
                ));
            }
        }
        if rules.replication_factor.is_set() {
            if t.replication_factor < 0 {
                return Err(reject("replication_factor", format!("the replication factor must be given explicitly: the topic rules ({}) require {}", rules.origin, rules.replication_factor)));
            }
            if !rules
                .replication_factor
                .contains(t.replication_factor as i64)
            {
                return Err(reject(
                    "replication_factor",
                    format!(
                        "replication factor {}, but the topic rules ({}) require {}",
                        t.replication_factor, rules.origin, rules.replication_factor
                    ),
                ));
            }
        }
        for (key, value) in &t.configs {
            // A config without a value takes the broker default.
            if let Some(value) = value {
                check_config(rules, t.name, key, value)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn judge_partition_count(&self, topic: &str, count: i32) -> Result<(), Rejection> {
        self.judge_partition_count_as(topic, count, "", &mut Shadowed::default())
    }

    /// A topic's partition count raised to `count` by CreatePartitions. Internal (naming-exempt)
    /// topics are not governed.
    pub fn judge_partition_count_as(
        &self,
        topic: &str,
        count: i32,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Result<(), Rejection> {
        let Some(rules) = self.topic_rules_for(topic) else {
            return Ok(());
        };
        if rules.partitions.is_set() && !rules.partitions.contains(count as i64) {
            let r = topic_rejection(
                topic,
                "partitions",
                format!(
                    "cannot have {count} partitions: the topic rules ({}) require {}",
                    rules.origin, rules.partitions
                ),
            );
            return under_mode(&rules.mode, principal, shadowed, r);
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn judge_topic_config(&self, topic: &str, key: &str, value: &str) -> Result<(), Rejection> {
        self.judge_topic_config_as(topic, key, value, "", &mut Shadowed::default())
    }

    /// One config value set on a topic: by CreateTopics, AlterConfigs or IncrementalAlterConfigs
    /// (SET, and each item an APPEND adds to a list). Keys without a rule pass.
    pub fn judge_topic_config_as(
        &self,
        topic: &str,
        key: &str,
        value: &str,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Result<(), Rejection> {
        match self.topic_rules_for(topic) {
            Some(rules) => match check_config(rules, topic, key, value) {
                Ok(()) => Ok(()),
                Err(r) => under_mode(&rules.mode, principal, shadowed, r),
            },
            None => Ok(()),
        }
    }

    #[cfg(test)]
    pub fn judge_auto_create(&self, topic: &str) -> Result<(), Rejection> {
        self.judge_auto_create_as(topic, "", &mut Shadowed::default())
    }

    /// A topic a Metadata request would have the broker auto-create, with the broker's default
    /// partition count, replication factor and configs: judged as a CreateTopics that leaves
    /// all three to the broker.
    pub fn judge_auto_create_as(
        &self,
        topic: &str,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Result<(), Rejection> {
        let new = NewTopic {
            name: topic,
            num_partitions: -1,
            replication_factor: -1,
            configs: vec![],
        };
        self.judge_new_topic_as(&new, principal, shadowed)
            .map_err(|mut r| {
                r.message = r.message.replacen(
                    "meshgate: ",
                    "meshgate: auto-creation refused (the broker's defaults would apply): ",
                    1,
                );
                r
            })
    }

    /// The topic rules that govern changes to an existing topic: none for internal topics, or
    /// when they are `off`.
    fn topic_rules_for(&self, topic: &str) -> Option<&super::TopicRules> {
        let exempt = self.naming.as_ref().is_some_and(|n| n.is_exempt(topic));
        self.topics.as_ref().filter(|t| !exempt && !t.mode.is_off())
    }
}

/// Topic configs for which Kafka reads -1 as "unlimited".
const UNLIMITED_AT_MINUS_ONE: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "local.retention.ms",
    "local.retention.bytes",
];

/// One config value against the topic rules' config rules.
fn check_config(
    rules: &super::TopicRules,
    topic: &str,
    key: &str,
    value: &str,
) -> Result<(), Rejection> {
    let Some(rule) = rules.configs.iter().find(|r| r.key == key) else {
        return Ok(());
    };
    let reject = |message: String| Err(topic_rejection(topic, &rule.key, message));
    if rule.min.is_some() || rule.max.is_some() {
        let Ok(n) = value.trim().parse::<f64>() else {
            return reject(format!(
                "config {}={value} is not a number ({})",
                rule.key, rule.origin
            ));
        };
        // Kafka reads -1 as "no limit" for these keys: past any maximum.
        let n = if n == -1.0 && UNLIMITED_AT_MINUS_ONE.contains(&key) {
            f64::INFINITY
        } else {
            n
        };
        if rule.min.is_some_and(|m| n < m) || rule.max.is_some_and(|m| n > m) {
            let bound = match (rule.min, rule.max) {
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => unreachable!("checked above"),
            };
            return reject(format!(
                "config {}={value} must be {bound} ({})",
                rule.key, rule.origin
            ));
        }
    }
    if let Some(allowed) = &rule.allowed {
        for item in value.split(',').map(str::trim) {
            if !allowed.iter().any(|a| a == item) {
                return reject(format!(
                    "config {}={value}: `{item}` is not one of {allowed:?} ({})",
                    rule.key, rule.origin
                ));
            }
        }
    }
    Ok(())
}

fn topic_rejection(topic: &str, rule: &str, message: String) -> Rejection {
    Rejection {
        error_code: POLICY_VIOLATION,
        message: format!("meshgate: topic `{topic}`: {message}"),
        record_errors: vec![],
        policy: "topics",
        rule: rule.to_string(),
    }
}

/// The schema ids of the Confluent-framed values on Avro-contract topics of a produce request,
/// to fetch from an external registry before judging. Topics the principal may not produce to
/// (or that are refused whole) are skipped: their records are never read, so nothing is fetched
/// for them.
///
/// The batches are inflated through `inflater`, which keeps them for the judge: no batch is
/// decompressed twice. Ids come in the order first seen, and so do the contracts (by index).
pub fn avro_schema_ids<'r>(
    set: &PolicySet,
    topics: impl Iterator<Item = (&'r str, Option<&'r [u8]>)>,
    principal: &str,
    inflater: &mut RequestInflater,
) -> SchemaIds {
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    let mut contracts = Vec::new();
    for (topic, records) in topics {
        let contract = set.plan_topic_as(topic, principal).ok().and_then(|plan| {
            plan.contract
                .filter(|c| c.schema.as_ref().is_some_and(|s| s.format == Format::Avro))
        });
        let Some(contract) = contract else {
            continue;
        };
        if !contracts.contains(&contract.index) {
            contracts.push(contract.index);
        }
        for batch in batches(records.unwrap_or_default()).map_while(Result::ok) {
            let Ok(inflated) = inflater.inflate(&batch) else {
                continue;
            };
            for r in inflated.iter().map_while(Result::ok) {
                if let Some((id, _)) = r.value.and_then(avro_data::unframe) {
                    if seen.insert(id) {
                        ids.push(id);
                    }
                }
            }
        }
    }
    SchemaIds { ids, contracts }
}

/// What the registry prefetch needs from a produce request: the schema ids on its Avro-contract
/// topics, and those contracts' indexes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchemaIds {
    pub ids: Vec<u32>,
    pub contracts: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (rejected rule, shadowed (policy, rule, mode)) of one partition of JSON values.
    fn modes_verdict(
        s: &PolicySet,
        topic: &str,
        principal: &str,
        values: &[&str],
    ) -> (Option<String>, Vec<(String, String, String)>) {
        use crate::protocol::records::test_batch;
        use kafka_protocol::records::Compression;
        let specs: Vec<test_batch::Spec<'_>> = values
            .iter()
            .map(|v| (Some(&b"k"[..]), Some(v.as_bytes()), &[][..]))
            .collect();
        let bytes = test_batch::encode(&specs, Compression::None);
        let plan = match s.plan_topic_as(topic, principal) {
            Ok(p) => p,
            Err(r) => return (Some(r.rule), vec![]),
        };
        let verdict = s.judge_partition(
            &plan,
            -1,
            Some(&bytes),
            &Limits::default(),
            &Decoders::default(),
        );
        let shadowed = verdict
            .shadowed()
            .iter()
            .map(|w| (w.policy.to_string(), w.rule.clone(), w.mode.to_string()))
            .collect();
        match verdict {
            PartitionVerdict::Accept { .. } => (None, shadowed),
            PartitionVerdict::Reject { rejection, .. } => (Some(rejection.rule), shadowed),
        }
    }

    const MODES: &str = r#"
naming:
  topics: { pattern: '^[a-z]+\.[a-z]+\.v[0-9]+$' }
  mode: shadow
produce:
  - key: required
    mode: canary
    canary: { principals: ['User:team'] }
---
contract:
  name: orders
  owner: shop
  topic: shop.orders.v1
  mode: shadow
  schema:
    format: json
    definition: {"type": "record", "name": "O", "fields": [{"name": "total", "type": "double"}, {"name": "qty", "type": "long"}]}
  quality:
    validity_rules:
      - total > 0
      - rule: qty > 0
        mode: enforce
      - rule: qty < 1000
        mode: off
"#;

    #[test]
    fn a_shadowed_rule_forwards_and_names_what_it_would_refuse() {
        let s = set(MODES);
        let good = r#"{"total": 1, "qty": 1}"#;
        let bad_total = r#"{"total": -1, "qty": 1}"#;
        // The contract is in shadow, so `total > 0` only notes; twice broken, noted once.
        let (rejected, shadowed) = modes_verdict(
            &s,
            "shop.orders.v1",
            "User:x",
            &[good, bad_total, bad_total],
        );
        assert_eq!(rejected, None);
        assert_eq!(
            shadowed,
            [("contract".into(), "total > 0".into(), "shadow".into())]
        );
        // `qty > 0` sets its own mode, enforce: refused, and the shadowed rule still noted.
        let (rejected, shadowed) = modes_verdict(
            &s,
            "shop.orders.v1",
            "User:x",
            &[r#"{"total": -1, "qty": 0}"#],
        );
        assert_eq!(rejected.as_deref(), Some("qty > 0"));
        assert_eq!(shadowed.len(), 1);
        // `qty < 1000` is off: not judged, not noted.
        let (rejected, shadowed) = modes_verdict(
            &s,
            "shop.orders.v1",
            "User:x",
            &[r#"{"total": 1, "qty": 5000}"#],
        );
        assert_eq!((rejected, shadowed), (None, vec![]));
        // A schema failure under a shadowed contract: noted, forwarded.
        let (rejected, shadowed) =
            modes_verdict(&s, "shop.orders.v1", "User:x", &[r#"{"total": "x"}"#]);
        assert_eq!(rejected, None);
        assert_eq!(
            shadowed,
            [("contract".into(), "schema".into(), "shadow".into())]
        );
    }

    #[test]
    fn shadowed_naming_and_a_canary_produce_rule() {
        let s = set(MODES);
        // Naming in shadow: a badly named topic is planned, with the would-reject noted.
        let (rejected, shadowed) = modes_verdict(&s, "BadName", "User:x", &[r#"{}"#]);
        assert_eq!(rejected, None);
        assert_eq!(shadowed[0].0, "naming");
        assert_eq!(shadowed[0].2, "shadow");
        // The key rule is a canary for User:team: enforced for it, shadowed for others.
        use crate::protocol::records::test_batch;
        use kafka_protocol::records::Compression;
        let keyless = test_batch::encode(&[(None, Some(&b"{}"[..]), &[])], Compression::None);
        let judge = |principal: &str| {
            let plan = s.plan_topic_as("shop.misc.v1", principal).unwrap();
            s.judge_partition(
                &plan,
                -1,
                Some(&keyless),
                &Limits::default(),
                &Decoders::default(),
            )
        };
        match judge("User:team") {
            PartitionVerdict::Reject { rejection, .. } => assert_eq!(rejection.rule, "key"),
            v => panic!("{v:?}"),
        }
        match judge("User:other") {
            PartitionVerdict::Accept { shadowed, .. } => {
                let w = shadowed.iter().next().unwrap();
                assert_eq!(
                    (w.policy, w.rule.as_str(), w.mode),
                    ("produce", "key", "canary")
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn topic_rules_in_shadow_or_canary_let_a_change_through_and_note_it() {
        let s = set(
            "naming:\n  topics: { pattern: '^[a-z.]+$' }\n  mode: shadow\ntopics:\n  partitions: { min: 3 }\n  mode: canary\n  canary: { principals: ['User:platform'] }\n",
        );
        let t = new_topic("BAD", 1, &[]);
        let noted = |sh: &Shadowed| {
            sh.iter()
                .map(|w| (w.policy, w.rule.clone(), w.mode))
                .collect::<Vec<_>>()
        };
        let mut sh = Shadowed::default();
        assert!(s.judge_new_topic_as(&t, "User:dev", &mut sh).is_ok());
        assert_eq!(
            noted(&sh),
            [
                ("naming", "^[a-z.]+$".to_string(), "shadow"),
                ("topics", "partitions".to_string(), "canary")
            ]
        );
        let mut sh = Shadowed::default();
        let r = s
            .judge_new_topic_as(&t, "User:platform", &mut sh)
            .unwrap_err();
        assert_eq!(r.rule, "partitions");
        assert_eq!(noted(&sh), [("naming", "^[a-z.]+$".to_string(), "shadow")]);
        let mut sh = Shadowed::default();
        assert!(s
            .judge_partition_count_as("ok.topic", 1, "User:dev", &mut sh)
            .is_ok());
        assert_eq!(noted(&sh), [("topics", "partitions".to_string(), "canary")]);
        // Off: not judged at all.
        let off = set("topics:\n  partitions: { min: 3 }\n  mode: off\n");
        let mut sh = Shadowed::default();
        assert!(off.judge_new_topic_as(&t, "User:dev", &mut sh).is_ok());
        assert!(sh.is_empty());
    }

    #[test]
    fn a_contract_refusal_names_the_rule_its_file_the_version_and_the_catalog() {
        use crate::protocol::records::test_batch;
        use kafka_protocol::records::Compression;
        let s = set(
            "contract:\n  name: orders\n  owner: shop\n  topic: shop.orders.v1\n  schema:\n    format: json\n    version: 1.2.0\n    definition: {\"type\": \"record\", \"name\": \"O\", \"fields\": [{\"name\": \"total\", \"type\": \"double\"}]}\n  quality:\n    validity_rules: [total > 0]\n",
        );
        let plan = s.plan_topic("shop.orders.v1").unwrap();
        let judge = |value: &[u8]| {
            let bytes = test_batch::encode(&[(None, Some(value), &[])], Compression::None);
            match s.judge_partition(
                &plan,
                -1,
                Some(&bytes),
                &Limits::default(),
                &Decoders::default(),
            ) {
                PartitionVerdict::Reject { rejection, .. } => rejection.message,
                v => panic!("{v:?}"),
            }
        };
        assert_eq!(
            judge(br#"{"total": -1}"#),
            "meshgate: topic `shop.orders.v1`: record 0: breaks contract `orders` rule `total > 0` (rules.yaml:10; version 1.2.0; /catalog#orders)"
        );
        let m = judge(br#"{"total": "secret-value"}"#);
        assert!(m.contains("schema (rules.yaml:2; version 1.2.0; /catalog#orders): field `total` must be a number, not a string"), "{m}");
        assert!(
            !m.contains("secret-value"),
            "the value itself is never in the message"
        );
    }

    #[test]
    fn mode_keys_are_checked_at_load() {
        let errors = |text: &str| {
            let mut errors = Vec::new();
            crate::policy::load::compile_sources(
                &[(std::path::PathBuf::from("m.yaml"), text.to_string())],
                &mut errors,
            );
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        };
        let e = errors("naming:\n  topics: { pattern: 'x' }\n  mode: canary\n");
        assert!(
            e[0].starts_with("m.yaml:3: naming: `mode: canary` needs `canary:`"),
            "{e:?}"
        );
        let e = errors("produce:\n  - key: required\n    canary: { principals: ['User:a'] }\n");
        assert!(
            e[0].contains("`canary:` applies only with `mode: canary` (mode is absent)"),
            "{e:?}"
        );
        let e = errors(
            "produce:\n  - key: required\n    mode: canary\n    canary: { principals: ['alice'], percent: 120 }\n",
        );
        assert!(e.iter().any(|l| l.contains("percent` is 120")), "{e:?}");
        assert!(
            e.iter().any(|l| l.contains("`alice` is not `Type:name`")),
            "{e:?}"
        );
        let e = errors("produce:\n  - key: required\n    mode: sometimes\n");
        assert!(e[0].starts_with("m.yaml:3:"), "{e:?}");
        let e = errors(
            "contract:\n  name: c\n  owner: o\n  topic: t\n  quality:\n    validity_rules:\n      - { rule: 'a > 1', cel: 'true' }\n",
        );
        assert!(
            e[0].contains("exactly one of `rule:` (SQL) and `cel:`"),
            "{e:?}"
        );
        // `off` is the mode, not YAML 1.1's boolean.
        let s = set("produce:\n  - key: required\n    mode: off\n");
        assert_eq!(s.produce[0].mode, Mode::Off);
        let e = errors(
            "contract:\n  name: c\n  owner: o\n  topic: t\n  quality:\n    validity_rules:\n      - { rule: 'a > 1', mode: sometimes }\n",
        );
        assert!(e[0].starts_with("m.yaml:7:"), "{e:?}");
    }

    #[test]
    fn the_registry_scan_and_the_judge_inflate_each_batch_once() {
        use crate::protocol::records::test_batch;
        use kafka_protocol::records::Compression;
        const SCHEMA: &str =
            r#"{"type": "record", "name": "A", "fields": [{"name": "n", "type": "long"}]}"#;
        let s = set(&format!(
            "contract:\n  name: avro\n  owner: shop\n  topic: shop.avro.v1\n  schema:\n    format: avro\n    definition: {SCHEMA}\n  quality:\n    validity_rules: [n > 0]\n"
        ));
        let index = s.contract_for("shop.avro.v1").unwrap().index;
        // Three records {n: 1} written with schema id 5, in one gzip batch.
        let value: &[u8] = b"\0\0\0\0\x05\x02";
        let specs: Vec<test_batch::Spec<'_>> = vec![(None, Some(value), &[]); 3];
        let bytes = test_batch::encode(&specs, Compression::Gzip);
        let limits = Limits::default();

        // The prefetch's scan: the ids and contracts, inflating the batch once and keeping it.
        let mut inflater = RequestInflater::new(&limits, true);
        let found = avro_schema_ids(
            &s,
            [("shop.avro.v1", Some(&bytes[..]))].into_iter(),
            "User:anyone",
            &mut inflater,
        );
        assert_eq!(
            found,
            SchemaIds {
                ids: vec![5],
                contracts: vec![index]
            }
        );
        assert_eq!(inflater.batches_inflated(), 1);

        // The fetch answered; the decoder is prepared as the prefetch prepares it.
        let writer = Arc::new(AvroSchema::parse(SCHEMA).unwrap());
        let decoders = s.compile_decoders();
        let reader = s.contracts[index].avro_reader.as_ref().unwrap();
        let mut external = ExternalWriters::default();
        external.known.insert(5, writer.clone());
        external
            .decoders
            .insert((index, 5), decoders.resolve(index, reader, 5, &writer));

        let plan = s.plan_topic("shop.avro.v1").unwrap();
        let writers = Writers {
            decoders: &decoders,
            external: Some(&external),
        };
        let verdict =
            s.judge_partition_with(&plan, -1, Some(&bytes), &limits, writers, &mut inflater);
        assert!(
            matches!(verdict, PartitionVerdict::Accept { records: 3, .. }),
            "{verdict:?}"
        );
        assert_eq!(
            inflater.batches_inflated(),
            1,
            "the judge read the batch the scan inflated"
        );
    }

    const RULES: &str = r#"
naming:
  topics:
    pattern: '^[a-z]+\.[a-z]+\.v[0-9]+$'
    exempt: ['^__']
topics:
  partitions: { min: 3, max: 12 }
  replication_factor: { min: 1 }
  configs:
    retention.ms: { min: 60000, max: 604800000 }
    cleanup.policy: { allowed: [delete, compact] }
"#;

    fn set(text: &str) -> PolicySet {
        crate::policy::load::compile_text("rules.yaml", text)
    }

    fn new_topic<'a>(
        name: &'a str,
        partitions: i32,
        configs: &[(&'a str, &'a str)],
    ) -> NewTopic<'a> {
        NewTopic {
            name,
            num_partitions: partitions,
            replication_factor: 1,
            configs: configs.iter().map(|(k, v)| (*k, Some(*v))).collect(),
        }
    }

    fn rule_of(r: Result<(), Rejection>) -> Option<(i16, &'static str, String)> {
        r.err().map(|r| (r.error_code, r.policy, r.rule))
    }

    #[test]
    fn a_new_topic_is_judged_by_name_then_partitions_then_replication_then_configs() {
        let s = set(RULES);
        assert_eq!(
            rule_of(s.judge_new_topic(&new_topic("shop.a.v1", 6, &[]))),
            None
        );
        assert_eq!(
            rule_of(s.judge_new_topic(&new_topic("Shop", 6, &[]))).map(|r| r.1),
            Some("naming")
        );
        assert_eq!(
            rule_of(s.judge_new_topic(&new_topic("shop.a.v1", 2, &[]))),
            Some((POLICY_VIOLATION, "topics", "partitions".into()))
        );
        assert_eq!(
            rule_of(s.judge_new_topic(&new_topic("shop.a.v1", -1, &[]))),
            Some((POLICY_VIOLATION, "topics", "partitions".into())),
            "the broker default is not a count the rules can check"
        );
        let mut rf0 = new_topic("shop.a.v1", 6, &[]);
        rf0.replication_factor = 0;
        assert_eq!(
            rule_of(s.judge_new_topic(&rf0)).map(|r| r.2),
            Some("replication_factor".into())
        );
        assert_eq!(
            rule_of(s.judge_new_topic(&new_topic(
                "shop.a.v1",
                6,
                &[("cleanup.policy", "delete,bogus")]
            )))
            .map(|r| r.2),
            Some("cleanup.policy".into())
        );
        let message = s
            .judge_new_topic(&new_topic("shop.a.v1", 6, &[("retention.ms", "1000")]))
            .unwrap_err()
            .message;
        assert!(
            message.contains("between 60000") && message.contains("rules.yaml:10"),
            "{message}"
        );
    }

    #[test]
    fn infinite_retention_breaks_a_maximum() {
        let s = set(RULES);
        for judge in [
            |s: &PolicySet| s.judge_topic_config("shop.a.v1", "retention.ms", "-1"),
            |s: &PolicySet| {
                s.judge_new_topic(&NewTopic {
                    name: "shop.a.v1",
                    num_partitions: 6,
                    replication_factor: 1,
                    configs: vec![("retention.ms", Some("-1"))],
                })
            },
        ] {
            assert_eq!(
                rule_of(judge(&s)),
                Some((POLICY_VIOLATION, "topics", "retention.ms".into()))
            );
        }
        assert_eq!(
            rule_of(s.judge_topic_config("shop.a.v1", "retention.ms", "86400000")),
            None
        );
        assert_eq!(
            rule_of(s.judge_topic_config("shop.a.v1", "segment.ms", "-1")),
            None
        );
    }

    #[test]
    fn changes_to_existing_topics_follow_the_rules_except_for_internal_topics() {
        let s = set(RULES);
        assert_eq!(rule_of(s.judge_partition_count("shop.a.v1", 12)), None);
        assert_eq!(
            rule_of(s.judge_partition_count("shop.a.v1", 13)),
            Some((POLICY_VIOLATION, "topics", "partitions".into()))
        );
        assert_eq!(
            rule_of(s.judge_partition_count("__consumer_offsets", 50)),
            None
        );
        assert_eq!(
            rule_of(s.judge_topic_config("__consumer_offsets", "retention.ms", "-1")),
            None
        );
        assert_eq!(
            rule_of(s.judge_topic_config("shop.a.v1", "unruled.key", "x")),
            None
        );
        // No topic rules at all: nothing to judge.
        let naming_only = set("naming:\n  topics:\n    pattern: '^a$'\n");
        assert_eq!(rule_of(naming_only.judge_partition_count("b", 1000)), None);
    }

    #[test]
    fn auto_creation_is_judged_as_a_create_with_broker_defaults() {
        let s = set(RULES);
        let r = s.judge_auto_create("shop.a.v1").unwrap_err();
        assert_eq!(r.rule, "partitions");
        assert!(r.message.contains("auto-creation refused"), "{}", r.message);
        let naming_only = set("naming:\n  topics:\n    pattern: '^[a-z.]+$'\n");
        assert!(naming_only.judge_auto_create("shop.ok").is_ok());
        assert_eq!(
            naming_only.judge_auto_create("NO").unwrap_err().policy,
            "naming"
        );
    }

    /// Produce refusals, one case per reason: the code, the policy and rule labels, and what
    /// the message names.
    mod produce_reasons {
        use super::*;
        use crate::protocol::records::test_batch;
        use kafka_protocol::records::Compression;

        const POLICIES: &str = r#"
naming:
  topics:
    pattern: '^[a-z]+\.[a-z-]+\.v[0-9]+$'
produce:
  - topics: '^shop\.acks\.'
    acks: all
  - topics: '^shop\.codec\.'
    compression: [zstd]
  - topics: '^shop\.idem\.'
    idempotence: required
  - topics: '^shop\.keyed\.'
    key: required
  - topics: '^shop\.traced\.'
    headers: [trace-id]
  - topics: '^shop\.small\.'
    max_record_bytes: 64
---
contract:
  name: orders
  owner: shop
  topic: shop.orders.v1
  schema:
    format: json
    definition: {"type": "record", "name": "O", "fields": [{"name": "order_total", "type": "double"}]}
  quality:
    validity_rules: [order_total > 0]
---
contract:
  name: private
  owner: shop
  topic: shop.private.v1
  producers: [User:alice]
---
contract:
  name: avro
  owner: shop
  topic: shop.avro.v1
  schema:
    format: avro
    definition: {"type": "record", "name": "A", "fields": [{"name": "n", "type": "long"}]}
"#;

        /// (key, value, headers) of one record.
        type Spec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Vec<(&'a str, &'a [u8])>);
        /// (what, topic, batch, (code, policy, rule, what the message names), record_errors).
        type Case<'a> = (
            &'a str,
            &'a str,
            Vec<u8>,
            (i16, &'a str, &'a str, &'a str),
            Vec<i32>,
        );

        struct Batch<'a> {
            records: Vec<Spec<'a>>,
            producer_id: i64,
            control: bool,
            compression: Compression,
        }

        fn batch(values: &[&'static str]) -> Batch<'static> {
            Batch {
                records: values
                    .iter()
                    .map(|v| {
                        (
                            Some(&b"k"[..]),
                            Some(v.as_bytes()),
                            vec![("trace-id", &b"t"[..])],
                        )
                    })
                    .collect(),
                producer_id: 7,
                control: false,
                compression: Compression::None,
            }
        }

        fn encode(b: &Batch<'_>) -> Vec<u8> {
            let specs: Vec<test_batch::Spec<'_>> =
                b.records.iter().map(|(k, v, h)| (*k, *v, &h[..])).collect();
            test_batch::encode_as(&specs, b.compression, b.producer_id, b.control)
        }

        /// (code, policy, rule, message) of the verdict; `None` when accepted.
        fn judge(
            s: &PolicySet,
            topic: &str,
            principal: &str,
            acks: i16,
            bytes: &[u8],
            limits: &Limits,
            external: Option<&ExternalWriters>,
        ) -> Option<(i16, &'static str, String, String, Vec<i32>)> {
            let decoders = s.compile_decoders();
            let writers = Writers {
                decoders: &decoders,
                external,
            };
            let plan = match s.plan_topic_as(topic, principal) {
                Ok(p) => p,
                Err(r) => return Some((r.error_code, r.policy, r.rule, r.message, vec![])),
            };
            let mut inflater = RequestInflater::new(limits, false);
            match s.judge_partition_with(&plan, acks, Some(bytes), limits, writers, &mut inflater) {
                PartitionVerdict::Accept { .. } => None,
                PartitionVerdict::Reject { rejection: r, .. } => Some((
                    r.error_code,
                    r.policy,
                    r.rule,
                    r.message,
                    r.record_errors.iter().map(|(i, _)| *i).collect(),
                )),
            }
        }

        #[test]
        fn every_produce_refusal_reason() {
            let s = set(POLICIES);
            let ok = encode(&batch(&[r#"{"order_total": 1}"#]));
            let limits = Limits::default();
            let anyone = "User:ANONYMOUS";
            let plain =
                |topic: &str, bytes: &[u8]| judge(&s, topic, anyone, -1, bytes, &limits, None);

            // Accepted, for every topic below, with a batch that breaks nothing.
            for t in [
                "shop.acks.v1",
                "shop.keyed.v1",
                "shop.traced.v1",
                "shop.orders.v1",
                "shop.idem.v1",
            ] {
                assert_eq!(plain(t, &ok), None, "{t}");
            }
            let expect = |what: &str,
                          got: Option<(i16, &str, String, String, Vec<i32>)>,
                          want: (i16, &str, &str),
                          names: &str| {
                let (c, p, r, m, _) = got.unwrap_or_else(|| panic!("{what}: accepted"));
                assert_eq!((c, p, r.as_str()), want, "{what}: {m}");
                assert!(m.contains(names), "{what}: `{m}` should name `{names}`");
            };
            expect(
                "naming",
                plain("Shop_Orders", &ok),
                (POLICY_VIOLATION, "naming", r"^[a-z]+\.[a-z-]+\.v[0-9]+$"),
                "naming rule",
            );
            expect(
                "acks",
                judge(&s, "shop.acks.v1", anyone, 1, &ok, &limits, None),
                (INVALID_RECORD, "produce", "acks"),
                "acks",
            );
            expect(
                "producers",
                judge(&s, "shop.private.v1", "User:bob", -1, &ok, &limits, None),
                (TOPIC_AUTHORIZATION_FAILED, "producers", "producers"),
                "User:bob",
            );

            let mut gzip = batch(&["x"]);
            gzip.compression = Compression::Gzip;
            let mut no_pid = batch(&["x"]);
            no_pid.producer_id = -1;
            let mut control = batch(&["x"]);
            control.control = true;
            let mut keyless = batch(&["a", "b"]);
            keyless.records[1].0 = None;
            let mut untraced = batch(&["a"]);
            untraced.records[0].2.clear();
            let big = batch(&[
                "a",
                "this value is far longer than the sixty-four bytes the rule allows",
            ]);
            let table: Vec<Case<'_>> = vec![
                (
                    "compression",
                    "shop.codec.v1",
                    encode(&gzip),
                    (INVALID_RECORD, "produce", "compression", "gzip"),
                ),
                (
                    "idempotence",
                    "shop.idem.v1",
                    encode(&no_pid),
                    (INVALID_RECORD, "produce", "idempotence", "idempotent"),
                ),
                (
                    "control batch",
                    "shop.orders.v1",
                    encode(&control),
                    (INVALID_RECORD, "produce", "malformed_batch", "control"),
                ),
                (
                    "malformed",
                    "shop.orders.v1",
                    b"\0\0\0\0garbage".to_vec(),
                    (INVALID_RECORD, "produce", "malformed_batch", "malformed"),
                ),
                (
                    "key",
                    "shop.keyed.v1",
                    encode(&keyless),
                    (INVALID_RECORD, "produce", "key", "record 1"),
                ),
                (
                    "headers",
                    "shop.traced.v1",
                    encode(&untraced),
                    (INVALID_RECORD, "produce", "headers", "trace-id"),
                ),
                (
                    "size",
                    "shop.small.v1",
                    encode(&big),
                    (INVALID_RECORD, "produce", "max_record_bytes", "over 64"),
                ),
                (
                    "schema",
                    "shop.orders.v1",
                    encode(&batch(&["not json"])),
                    (INVALID_RECORD, "contract", "schema", "not JSON"),
                ),
                (
                    "rule",
                    "shop.orders.v1",
                    encode(&batch(&[r#"{"order_total": 1}"#, r#"{"order_total": 0}"#])),
                    (INVALID_RECORD, "contract", "order_total > 0", "record 1"),
                ),
            ]
            .into_iter()
            .map(|(what, topic, bytes, want)| {
                let errors = match what {
                    "key" | "rule" => vec![1],
                    "headers" | "schema" => vec![0],
                    "size" => vec![1],
                    _ => vec![],
                };
                (what, topic, bytes, want, errors)
            })
            .collect();
            for (what, topic, bytes, (code, policy, rule, names), errors) in table {
                let got = plain(topic, &bytes);
                let (c, p, r, m, e) = got.unwrap_or_else(|| panic!("{what}: accepted"));
                assert_eq!((c, p, r.as_str()), (code, policy, rule), "{what}: {m}");
                assert!(m.contains(names), "{what}: `{m}` should name `{names}`");
                assert_eq!(
                    e, errors,
                    "{what}: record_errors name the offending records"
                );
            }

            // The request's inflate budget.
            let tight = Limits {
                max_request_records: 1,
                ..Limits::default()
            };
            let two = encode(&batch(&[r#"{"order_total": 1}"#, r#"{"order_total": 2}"#]));
            let (c, p, r, m, _) =
                judge(&s, "shop.orders.v1", anyone, -1, &two, &tight, None).expect("over budget");
            assert_eq!(
                (c, p, r.as_str()),
                (INVALID_RECORD, "limits", "request_budget"),
                "{m}"
            );

            // An external registry that did not answer for the record's schema id: retriable.
            let external = ExternalWriters {
                known: HashMap::new(),
                unavailable: HashMap::from([(
                    5,
                    crate::schema::registry_client::RegistryError::Timeout(
                        std::time::Duration::from_secs(2),
                    ),
                )]),
                ..ExternalWriters::default()
            };
            let framed: &'static [u8] = b"\0\0\0\0\x05\x02";
            let mut avro = batch(&[]);
            avro.records.push((Some(b"k"), Some(framed), vec![]));
            let (c, p, r, m, _) = judge(
                &s,
                "shop.avro.v1",
                anyone,
                -1,
                &encode(&avro),
                &limits,
                Some(&external),
            )
            .expect("registry unavailable");
            assert_eq!(
                (c, p, r.as_str()),
                (REQUEST_TIMED_OUT, "registry", "unavailable"),
                "{m}"
            );
            assert!(m.contains("schema id 5") && m.contains("retry"), "{m}");
        }
    }
}
