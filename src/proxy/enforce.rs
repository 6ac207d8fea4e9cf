//! Policy enforcement on the data path: the one seam where a policy verdict turns into a request
//! forwarded, a request trimmed, or a response meshgate writes itself.
//!
//! - Nothing rejected: the original frame is forwarded untouched.
//! - Some partitions (or topics) rejected: a request holding only the accepted ones is forwarded.
//!   Their record batches are the original bytes (the envelope is re-encoded, the batches are
//!   copied verbatim). The upstream response is merged with meshgate's own results for the
//!   rejected ones, in the request's order.
//! - Everything rejected: meshgate answers alone; nothing reaches the broker.
//! - Produce with acks=0 and a rejection: the accepted part is forwarded, then the connection is
//!   closed, as a broker closes it on an acks=0 error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, ProduceRequest, ProduceResponse, RequestHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::dead_letter::{self, Letter, Prepared};
use super::identity::{Identity, SaslStep};
use super::rejection::{Decided, RejectionEvent, RequestAudit, ShadowEvent, Site};
use super::rewrite::merge::{CreateTopicsMerge, ProduceMerge};
use super::rewrite::ResponseMerge;
use crate::generation::Generation;
use crate::metrics::{ContractMetrics, Metrics};
use crate::policy::judge::{
    avro_schema_ids, count_records, ExternalWriters, Limits, NewTopic, PartitionVerdict, Rejection,
    RequestInflater, Tally, Writers,
};
use crate::policy::mode::Shadowed;
use crate::policy::PolicySet;
use crate::protocol::header::{
    join_request, split_request, split_response, undecodable, HeaderError,
};

/// What to do with a governed request.
pub enum Decision {
    /// Forward the original frame.
    Forward,
    /// Forward this trimmed frame; merge the response.
    ForwardTrimmed {
        frame: Bytes,
        merge: Box<dyn ResponseMerge>,
    },
    /// Forward this edited frame instead of the original; the response is handled as usual.
    ForwardEdited(Bytes),
    /// Answer with this response frame; forward nothing.
    Respond(Bytes),
    /// acks=0 with a rejection: forward this frame if any, then close the connection.
    ForwardThenClose(Option<Bytes>),
    /// Refused partitions whose records go to dead-letter topics first (see `dead_letter`):
    /// forward `frame` (the accepted part) if any; the answer is merged once the letters are
    /// written. With acks=0 nothing is answered and the connection closes, as above.
    DeadLetter {
        frame: Option<Bytes>,
        merge: ProduceMerge,
        letters: Vec<Letter>,
        acks_zero: bool,
        correlation_id: i32,
    },
}

/// Notes what a SaslHandshake or SaslAuthenticate request says about the principal. The frame
/// is forwarded unchanged; for SaslAuthenticate, the step is settled by the broker's answer.
pub fn sasl_request(
    identity: &Identity,
    frame: &Bytes,
    api: ApiKey,
    version: i16,
) -> Result<Option<SaslStep>, HeaderError> {
    let (_, mut body) = split_request(frame, api, version)?;
    match api {
        ApiKey::SaslHandshake => {
            let r = SaslHandshakeRequest::decode(&mut body, version)
                .map_err(|e| undecodable(api, version, e))?;
            identity.on_handshake(r.mechanism.as_str());
            Ok(None)
        }
        ApiKey::SaslAuthenticate => {
            let r = SaslAuthenticateRequest::decode(&mut body, version)
                .map_err(|e| undecodable(api, version, e))?;
            Ok(Some(identity.on_authenticate(&r.auth_bytes)))
        }
        _ => Ok(None),
    }
}

/// The error code and authentication bytes of a SaslAuthenticate response.
pub fn sasl_authenticate_result(frame: &Bytes, version: i16) -> Result<(i16, Bytes), HeaderError> {
    let (_, mut body) = split_response(frame, ApiKey::SaslAuthenticate, version)?;
    SaslAuthenticateResponse::decode(&mut body, version)
        .map(|r| (r.error_code, r.auth_bytes))
        .map_err(|e| undecodable(ApiKey::SaslAuthenticate, version, e))
}

/// Where each (topic, partition) of a request is: (topic index, partition index).
type PartitionPositions<'r> = HashMap<(&'r str, i32), (usize, usize)>;

/// A Produce request decoded once, carried through the registry prefetch and the judge.
#[derive(Debug)]
pub struct DecodedProduce {
    pub header: RequestHeader,
    pub request: ProduceRequest,
    pub version: i16,
}

/// Requests whose record bytes are at most this, none compressed, are judged on the connection's
/// own task: handing them to the judging pool would cost more than judging them.
pub const INLINE_JUDGE_BYTES: usize = 64 * 1024;

impl DecodedProduce {
    pub fn decode(frame: &Bytes, version: i16) -> Result<Self, HeaderError> {
        let (header, mut body) = split_request(frame, ApiKey::Produce, version)?;
        let request = ProduceRequest::decode(&mut body, version)
            .map_err(|e| undecodable(ApiKey::Produce, version, e))?;
        Ok(Self {
            header,
            request,
            version,
        })
    }

    /// Every (topic, records) of the request, in order.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.request.topic_data.iter().flat_map(|t| {
            t.partition_data
                .iter()
                .map(move |p| (t.name.0.as_str(), p.records.as_deref()))
        })
    }

    /// True when judging may take long enough to belong off the async workers: many record
    /// bytes, or any compressed batch (whose inflated size the wire does not tell).
    pub fn is_heavy(&self) -> bool {
        let mut bytes = 0usize;
        for (_, records) in self.partitions() {
            let records = records.unwrap_or_default();
            bytes += records.len();
            if bytes > INLINE_JUDGE_BYTES {
                return true;
            }
            let compressed = crate::protocol::records::batches(records)
                .map_while(Result::ok)
                .any(|b| b.attributes & 0x07 != 0);
            if compressed {
                return true;
            }
        }
        false
    }
}

/// One governed Produce request on its way through the judge: everything it needs, owned, so
/// that it can move to the judging pool and back.
/// What judging needs from the gateway, and nothing more: where to count, how far to inflate,
/// and which clients are judged all or nothing.
pub struct JudgeContext {
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// `GatewayConfig::all_or_nothing_clients`.
    pub all_or_nothing_clients: regex::RegexSet,
}

pub struct ProduceJob {
    pub cx: Arc<JudgeContext>,
    /// The one policy generation this request is judged under.
    pub policies: Arc<Generation>,
    pub decoded: DecodedProduce,
    pub principal: Arc<str>,
    pub inflater: RequestInflater,
    /// Writer schemas from the external registry, when one is configured.
    pub external: Option<ExternalWriters>,
    /// The Avro contracts (indexes) the request writes to, found with its schema ids.
    pub avro_contracts: Vec<usize>,
    /// The audit trail's view of the request, when the trail is on.
    pub audit: Option<RequestAudit>,
    /// The data keys of the protecting contracts' topics the request writes to (see
    /// [`seal_keys`]), or why there are none.
    pub seal: SealPlan,
}

/// Per protecting topic of a request: the keys its fields are sealed with, or why there are
/// none (the partition is then refused with a retriable error: nothing is written in
/// plaintext).
pub type SealPlan = Vec<(
    Box<str>,
    Result<crate::protect::SealKeys, crate::protect::keys::KeyError>,
)>;

/// The topics of a request whose contracts encrypt fields, once each, with whether they need
/// a deterministic key too.
fn encrypting_topics<'r>(
    policies: &PolicySet,
    decoded: &'r DecodedProduce,
) -> Vec<(&'r str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    for t in &decoded.request.topic_data {
        let name = t.name.0.as_str();
        let Some(c) = policies.contract_for(name) else {
            continue;
        };
        let Some(p) = c.protect.as_ref().filter(|p| p.encrypts()) else {
            continue;
        };
        if !c.mode.is_off() && !out.iter().any(|(n, _)| *n == name) {
            out.push((name, p.deterministic()));
        }
    }
    out
}

/// The keys the request's protecting topics need, when all are in memory already (a read
/// lock each); `None` when one must be made or loaded first ([`seal_keys`]).
pub fn seal_keys_ready(
    policies: &PolicySet,
    decoded: &DecodedProduce,
    keys: Option<&crate::protect::keys::KeyRing>,
) -> Option<SealPlan> {
    let Some(ring) = keys else {
        return Some(
            encrypting_topics(policies, decoded)
                .into_iter()
                .map(|(name, _)| {
                    (
                        Box::from(name),
                        Err(crate::protect::keys::KeyError::NoStore),
                    )
                })
                .collect(),
        );
    };
    encrypting_topics(policies, decoded)
        .into_iter()
        .map(|(name, det)| {
            let random = ring.current_now(name, false)?;
            let deterministic = if det {
                Some(ring.current_now(name, true)?)
            } else {
                None
            };
            Some((
                Box::from(name),
                Ok(crate::protect::SealKeys {
                    random: Some(random),
                    deterministic,
                }),
            ))
        })
        .collect()
}

/// The keys the request's protecting topics need, made or loaded first (from the key store's
/// files and the KMS).
pub async fn seal_keys(
    policies: &PolicySet,
    decoded: &DecodedProduce,
    keys: Option<&crate::protect::keys::KeyRing>,
) -> SealPlan {
    let mut plan: SealPlan = Vec::new();
    for (name, det) in encrypting_topics(policies, decoded) {
        let Some(ring) = keys else {
            plan.push((name.into(), Err(crate::protect::keys::KeyError::NoStore)));
            continue;
        };
        let random = ring.prepare(name, false).await;
        let deterministic = if det {
            Some(ring.prepare(name, true).await)
        } else {
            None
        };
        let keys = match (random, deterministic.transpose()) {
            (Ok(r), Ok(d)) => Ok(crate::protect::SealKeys {
                random: Some(r),
                deterministic: d,
            }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        plan.push((name.into(), keys));
    }
    plan
}

impl ProduceJob {
    /// The schema ids to fetch: those the request names on the Avro-contract topics its
    /// principal may produce to, inflating its batches once (kept for the judge).
    pub fn schema_ids(&mut self) -> Vec<u32> {
        let found = avro_schema_ids(
            &self.policies,
            self.decoded.partitions(),
            &self.principal,
            &mut self.inflater,
        );
        self.avro_contracts = found.contracts;
        found.ids
    }

    /// Gives the fetched writers their decoders for each Avro contract of the request, from the
    /// generation's cache (compiling on first sight), so that the judge takes no lock.
    fn prepare_decoders(&mut self) {
        let Some(external) = self.external.as_mut() else {
            return;
        };
        for &index in &self.avro_contracts {
            let Some(reader) = self
                .policies
                .contracts
                .get(index)
                .and_then(|c| c.avro_reader.as_ref())
            else {
                continue;
            };
            for (&id, writer) in &external.known {
                let compiled = self.policies.decoders.resolve(index, reader, id, writer);
                external.decoders.insert((index, id), compiled);
            }
        }
    }

    /// The verdict, under the job's one policy generation.
    pub fn judge(mut self) -> Result<(Decision, Option<ProduceWatch>), HeaderError> {
        self.prepare_decoders();
        produce(
            &self.cx,
            &self.policies,
            &self.decoded,
            self.external.as_ref(),
            &self.principal,
            &mut self.inflater,
            self.audit.as_ref(),
            &self.seal,
        )
    }
}

/// Judges a Produce request under `policies`. The watch, when there is one, follows the forwarded
/// request to its response, to measure the contracts' latency and availability.
///
/// A topic-partition named more than once is judged, forwarded and answered once, by its last
/// copy: a Kafka broker keeps only the last copy of a repeated partition
/// (`KafkaApis.handleProduceRequest` collects them into a map).
#[allow(clippy::too_many_arguments)]
pub fn produce(
    cx: &JudgeContext,
    policies: &Generation,
    decoded: &DecodedProduce,
    external: Option<&ExternalWriters>,
    principal: &str,
    inflater: &mut RequestInflater,
    audit: Option<&RequestAudit>,
    seal: &SealPlan,
) -> Result<(Decision, Option<ProduceWatch>), HeaderError> {
    let DecodedProduce {
        header,
        request,
        version,
    } = decoded;
    let version = *version;
    let client = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    // The last copy of each topic-partition; earlier copies are not judged. A request of one
    // partition (the common case) needs no map.
    let total: usize = request
        .topic_data
        .iter()
        .map(|t| t.partition_data.len())
        .sum();
    let last_copy: Option<PartitionPositions> = (total > 1).then(|| {
        let mut map = HashMap::with_capacity(total);
        for (ti, topic) in request.topic_data.iter().enumerate() {
            for (pi, p) in topic.partition_data.iter().enumerate() {
                map.insert((topic.name.0.as_str(), p.index), (ti, pi));
            }
        }
        map
    });
    let is_last = |name: &str, index: i32, at: (usize, usize)| {
        last_copy
            .as_ref()
            .is_none_or(|m| m.get(&(name, index)) == Some(&at))
    };
    let repeated = last_copy.as_ref().is_some_and(|m| m.len() < total);
    // First every partition's verdict, then the accounting: an all-or-nothing client's accepted
    // partitions turn into refusals when another partition is refused.
    let mut judged: Vec<JudgedPartition> = Vec::with_capacity(total);
    let mut order = Vec::with_capacity(request.topic_data.len());
    // Record bytes per owning team, charged once for the whole request.
    let mut charges: Vec<(&Arc<str>, crate::chargeback::Tally)> = Vec::new();
    // `naming.client_ids` judges the request's client once; a refused client id refuses every
    // partition, with the rule's message.
    let mut client_shadowed = Shadowed::default();
    let client_refusal = policies.client_id_refusal(client, principal, &mut client_shadowed);
    let plans: Vec<_> = request
        .topic_data
        .iter()
        .map(|t| match &client_refusal {
            Some(r) => Err(r.clone()),
            None => policies.plan_topic_as(t.name.0.as_str(), principal),
        })
        .collect();
    for (ti, topic) in request.topic_data.iter().enumerate() {
        let name = topic.name.0.as_str();
        let plan = &plans[ti];
        // The plan's contract; looked up again only for a topic refused whole (a principal not
        // among its producers still counts against its data product).
        let contract = match &plan {
            Ok(p) => p.contract,
            Err(_) => policies.contract_for(name),
        };
        let stats = contract.and_then(|c| policies.stats(c));
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (pi, p) in topic.partition_data.iter().enumerate() {
            if !is_last(name, p.index, (ti, pi)) {
                continue;
            }
            partitions.push(p.index);
            let size = p.records.as_ref().map_or(0, |r| r.len() as u64);
            match stats {
                Some(m) => m.bytes_in.inc_by(size),
                None => cx.metrics.bytes_in_other.inc_by(size),
            }
            if let Some(c) = contract {
                match charges.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &c.team)) {
                    Some((_, t)) => t.bytes_in += size,
                    None => charges.push((
                        &c.team,
                        crate::chargeback::Tally {
                            bytes_in: size,
                            produce_requests: 1,
                            ..Default::default()
                        },
                    )),
                }
            }
            let mut verdict = match plan {
                Ok(plan) => policies.judge_partition_with(
                    plan,
                    request.acks,
                    p.records.as_deref(),
                    &cx.limits,
                    Writers {
                        decoders: &policies.decoders,
                        external,
                    },
                    inflater,
                ),
                Err(r) => PartitionVerdict::Reject {
                    rejection: r.clone(),
                    records: count_records(p.records.as_deref()),
                    tally: Tally::default(),
                    shadowed: Shadowed::default(),
                },
            };
            if !client_shadowed.is_empty() {
                verdict.note_shadowed(&client_shadowed);
            }
            judged.push(JudgedPartition {
                topic: &topic.name.0,
                index: p.index,
                plan: plan.as_ref().ok(),
                contract,
                records: p.records.as_ref(),
                contract_topic: contract.map(|c| c.topic.as_str()),
                stats,
                verdict,
            });
        }
        if !partitions.is_empty() {
            order.push((topic.name.0.clone(), partitions));
        }
    }
    cx.metrics
        .charge(policies.chargeback_principal(principal), &charges);
    all_or_nothing(&mut judged, client, &cx.all_or_nothing_clients);
    // Field protection, on what the rules accepted (they judged the plaintext).
    let sealed = if policies.protects() {
        let writers = Writers {
            decoders: &policies.decoders,
            external,
        };
        seal_accepted(
            &mut judged,
            seal,
            (principal, writers),
            cx.limits.max_inflated_bytes,
        )
    } else {
        HashMap::new()
    };
    let mut rejected = HashMap::new();
    let mut letters: Vec<Letter> = Vec::new();
    let mut accepted_any = false;
    let mut watched: Vec<(StrBytes, Arc<ContractMetrics>)> = Vec::new();
    let mut ends: Vec<(StrBytes, i32, u64)> = Vec::new();
    for j in judged {
        let stats = j.stats;
        let tally = match &j.verdict {
            PartitionVerdict::Accept { tally, .. } | PartitionVerdict::Reject { tally, .. } => {
                *tally
            }
        };
        if let Some(m) = stats {
            m.records_valid.inc_by(tally.judged - tally.invalid);
            m.records_invalid.inc_by(tally.invalid);
            m.records_complete.inc_by(tally.complete);
        }
        let site = Site {
            api: "produce",
            topic: j.topic,
            partition: Some(j.index),
            client_id: client,
            principal,
            contract_topic: j.contract_topic,
            audit,
        };
        for would in j.verdict.shadowed().iter() {
            ShadowEvent { site, would }.emit(&cx.metrics);
        }
        match j.verdict {
            PartitionVerdict::Accept { records, .. } => {
                accepted_any = true;
                if let Some(m) = stats {
                    if records > 0 {
                        m.accepted_now();
                        ends.push((j.topic.clone(), j.index, records));
                    }
                    if !watched.iter().any(|(t, _)| t == j.topic) {
                        watched.push((j.topic.clone(), m.clone()));
                    }
                }
                stats
                    .map_or(&cx.metrics.produce_accepted_other, |m| &m.produce_accepted)
                    .inc_by(records);
            }
            PartitionVerdict::Reject {
                rejection, records, ..
            } => {
                stats
                    .map_or(&cx.metrics.produce_rejected_other, |m| &m.produce_rejected)
                    .inc_by(records);
                RejectionEvent {
                    site,
                    rejection: &rejection,
                }
                .emit(&cx.metrics);
                if let (Some(contract), Some(plan)) = (j.contract, j.plan) {
                    if let (Some(on_reject), Some(budget)) = (
                        contract.on_reject.as_ref(),
                        policies.dead_letter_budget(contract),
                    ) {
                        let dcx = dead_letter::Context {
                            set: policies,
                            plan,
                            writers: Writers {
                                decoders: &policies.decoders,
                                external,
                            },
                            principal,
                            client_id: client,
                            generation: policies.number,
                            policy_hash: &policies.hash,
                            audit,
                            max_record_errors: cx.limits.max_record_errors,
                        };
                        let refused = dead_letter::Refused {
                            topic: j.topic,
                            partition: j.index,
                            records: j.records,
                            rejection: &rejection,
                        };
                        match dead_letter::prepare(&dcx, (contract, on_reject, budget), refused) {
                            Prepared::Letter(l) => letters.push(*l),
                            Prepared::OverBound => cx
                                .metrics
                                .dead_letter_records
                                .with_label_values(&[contract.topic.as_str(), "over_bound"])
                                .inc_by(records),
                            Prepared::Ineligible => {}
                        }
                    }
                }
                rejected.insert((j.topic.clone(), j.index), rejection);
            }
        }
    }
    let watch = (!watched.is_empty() && request.acks != 0).then_some(ProduceWatch {
        version,
        topics: watched,
        ends,
    });
    if rejected.is_empty() && sealed.is_empty() {
        // The broker handles repeated partitions itself, the same way.
        return Ok((Decision::Forward, watch));
    }
    let trimmed = accepted_any.then(|| {
        let mut req = request.clone();
        for (ti, t) in req.topic_data.iter_mut().enumerate() {
            let name = t.name.0.clone();
            let mut pi = 0;
            t.partition_data.retain(|p| {
                let keep = (!repeated || is_last(name.as_str(), p.index, (ti, pi)))
                    && !rejected.contains_key(&(name.clone(), p.index));
                pi += 1;
                keep
            });
            for p in t.partition_data.iter_mut() {
                if let Some(set) = sealed.get(&(name.clone(), p.index)) {
                    p.records = Some(set.clone());
                }
            }
        }
        req.topic_data.retain(|t| !t.partition_data.is_empty());
        encode_request(header, ApiKey::Produce, version, &req)
    });
    if rejected.is_empty() {
        let frame = trimmed.expect("a sealed partition was accepted")?;
        return Ok((Decision::ForwardEdited(frame), watch));
    }
    let merge = ProduceMerge::new(version, order, rejected);
    if !letters.is_empty() {
        return Ok((
            Decision::DeadLetter {
                frame: trimmed.transpose()?,
                merge,
                letters,
                acks_zero: request.acks == 0,
                correlation_id: header.correlation_id,
            },
            watch.filter(|_| request.acks != 0),
        ));
    }
    if request.acks == 0 {
        return Ok((Decision::ForwardThenClose(trimmed.transpose()?), None));
    }
    match trimmed {
        Some(frame) => Ok((
            Decision::ForwardTrimmed {
                frame: frame?,
                merge: Box::new(merge),
            },
            watch,
        )),
        None => Ok((
            Decision::Respond(merge.refused_alone(header.correlation_id)?),
            None,
        )),
    }
}

/// Seals the protected fields of the accepted partitions of protecting contracts; a partition
/// that cannot be sealed (no key, a value that is not JSON) or that `require_encrypted` refuses
/// turns into a refusal. Returns the sealed record sets by (topic, partition).
fn seal_accepted(
    judged: &mut [JudgedPartition<'_>],
    seal: &SealPlan,
    (principal, writers): (&str, Writers<'_>),
    max_inflate: usize,
) -> HashMap<(StrBytes, i32), Bytes> {
    use crate::policy::mode::Effect;
    use crate::protect::avro_fields::ContractWriters;
    use crate::protect::{seal_records, Layout, Required, SealError, SealKeys};
    let mut sealed = HashMap::new();
    let none = SealKeys::default();
    for j in judged.iter_mut() {
        let Some(c) = j.contract.filter(|c| !c.mode.is_off()) else {
            continue;
        };
        let Some(p) = c.protect.as_ref() else {
            continue;
        };
        let PartitionVerdict::Accept {
            records,
            tally,
            shadowed,
        } = &mut j.verdict
        else {
            continue;
        };
        let Some(set) = j.records.filter(|r| !r.is_empty()) else {
            continue;
        };
        let keys = match seal.iter().find(|(t, _)| **t == *j.topic.as_str()) {
            Some((_, Ok(k))) => k,
            Some((_, Err(why))) => {
                let why = why.clone();
                j.verdict = refused(records, tally, shadowed, |_| Rejection {
                    error_code: crate::policy::judge::REQUEST_TIMED_OUT,
                    message: format!(
                        "meshgate: the fields of contract `{}` cannot be encrypted now: {why}; \
                         nothing was written, retry",
                        c.name
                    ),
                    record_errors: Vec::new(),
                    policy: "contract",
                    rule: "protect".into(),
                });
                continue;
            }
            None => &none,
        };
        let mut required = match c.mode.effect(principal) {
            Effect::Enforce => Required::Enforce,
            Effect::Shadow(_) => Required::Shadow(None),
        };
        let avro = ContractWriters {
            writers,
            contract: c.index,
        };
        let layout = match c.avro_reader {
            Some(_) => Layout::Avro(&avro),
            None => Layout::Json,
        };
        match seal_records(set, &c.topic, (p, layout), keys, max_inflate, &mut required) {
            Ok(done) => {
                if let Some(m) = j.stats {
                    m.fields_sealed.inc_by(done.fields);
                }
                if let (Required::Shadow(Some(field)), Effect::Shadow(mode)) =
                    (&required, c.mode.effect(principal))
                {
                    shadowed.note("contract", "require_encrypted", mode, || {
                        format!("a record's field `{field}` is not a meshgate envelope (protect: require_encrypted)")
                    });
                }
                if let Some(new) = done.set {
                    sealed.insert((j.topic.clone(), j.index), new);
                }
            }
            Err(e) => {
                let (code, rule, index) = match &e {
                    SealError::NotSealed { index, .. } => (
                        crate::policy::judge::INVALID_RECORD,
                        "require_encrypted",
                        Some(*index),
                    ),
                    SealError::NotJson { index, .. } | SealError::NotAvro { index, .. } => (
                        crate::policy::judge::INVALID_RECORD,
                        "protect",
                        Some(*index),
                    ),
                    SealError::NoKey => (crate::policy::judge::REQUEST_TIMED_OUT, "protect", None),
                    SealError::Batch(_) => (crate::policy::judge::INVALID_RECORD, "protect", None),
                };
                let message = format!("meshgate: contract `{}`: {e}", c.name);
                j.verdict = refused(records, tally, shadowed, |_| Rejection {
                    error_code: code,
                    record_errors: index
                        .map(|i| vec![(i as i32, message.clone())])
                        .unwrap_or_default(),
                    message,
                    policy: "contract",
                    rule: rule.into(),
                });
            }
        }
    }
    sealed
}

/// An accepted partition's verdict turned into a refusal, its counts kept.
fn refused(
    records: &mut u64,
    tally: &mut Tally,
    shadowed: &mut Shadowed,
    rejection: impl FnOnce(()) -> Rejection,
) -> PartitionVerdict {
    PartitionVerdict::Reject {
        rejection: rejection(()),
        records: *records,
        tally: *tally,
        shadowed: std::mem::take(shadowed),
    }
}

/// One topic-partition's verdict, before it is counted and answered.
struct JudgedPartition<'a> {
    topic: &'a StrBytes,
    index: i32,
    /// The topic's plan, when the principal may produce to it.
    plan: Option<&'a crate::policy::judge::TopicPlan<'a>>,
    contract: Option<&'a Arc<crate::policy::Contract>>,
    /// The partition's record batches as sent.
    records: Option<&'a Bytes>,
    /// The topic of the partition's data contract, for metric labels.
    contract_topic: Option<&'a str>,
    stats: Option<&'a Arc<ContractMetrics>>,
    verdict: PartitionVerdict,
}

/// For a client judged all or nothing (`GatewayConfig::all_or_nothing_clients`): when any
/// partition is refused, the accepted ones are refused too, naming the refusal that caused it.
/// Their records were valid: the contract tallies still count them so. The client id is matched
/// only for a request that has both verdicts, so no other request pays for the regex.
fn all_or_nothing(judged: &mut [JudgedPartition<'_>], client: &str, clients: &regex::RegexSet) {
    fn refused<'j>(j: &'j JudgedPartition<'_>) -> Option<&'j Rejection> {
        match &j.verdict {
            PartitionVerdict::Reject { rejection, .. } => Some(rejection),
            PartitionVerdict::Accept { .. } => None,
        }
    }
    let Some(first) = judged.iter().position(|j| refused(j).is_some()) else {
        return;
    };
    if judged.iter().all(|j| refused(j).is_some()) || !clients.is_match(client) {
        return;
    }
    let cause = {
        let j = &judged[first];
        let message = refused(j).map_or("", |r| r.message.as_str());
        format!("{}-{}: {message}", j.topic.as_str(), j.index)
    };
    for j in judged.iter_mut() {
        if let PartitionVerdict::Accept {
            records,
            tally,
            ref mut shadowed,
        } = j.verdict
        {
            let shadowed = std::mem::take(shadowed);
            j.verdict = PartitionVerdict::Reject {
                rejection: Rejection {
                    error_code: crate::policy::judge::INVALID_RECORD,
                    message: format!(
                        "meshgate: not written: another partition of this request was refused \
                         ({cause}); client id `{client}` is judged all or nothing \
                         (all_or_nothing_client_ids)"
                    ),
                    record_errors: Vec::new(),
                    policy: "produce",
                    rule: "all_or_nothing".to_string(),
                },
                records,
                tally,
                shadowed,
            };
        }
    }
}

/// Follows a forwarded produce request that carried contract topics, to its response.
#[derive(Debug)]
pub struct ProduceWatch {
    version: i16,
    topics: Vec<(StrBytes, Arc<ContractMetrics>)>,
    /// (contract topic, partition, records) of each accepted partition: where its log ends once
    /// the broker answers with the batch's base offset (`usage`).
    ends: Vec<(StrBytes, i32, u64)>,
}

impl ProduceWatch {
    /// Counts the request per contract: ok when the broker answered every partition of its topic
    /// without error, and the latency either way.
    pub fn observe(self, upstream_frame: &Bytes, elapsed: Duration, usage: &crate::usage::Usage) {
        let decoded = split_response(upstream_frame, ApiKey::Produce, self.version)
            .ok()
            .and_then(|(_, mut body)| ProduceResponse::decode(&mut body, self.version).ok());
        for (topic, m) in &self.topics {
            m.latency.observe(elapsed.as_secs_f64());
            let ok = decoded.as_ref().is_some_and(|r| {
                r.responses
                    .iter()
                    .filter(|t| &t.name.0 == topic)
                    .all(|t| t.partition_responses.iter().all(|p| p.error_code == 0))
            });
            if ok {
                m.requests_ok.inc();
            } else {
                m.requests_failed.inc();
            }
        }
        let Some(r) = decoded else { return };
        for (topic, partition, records) in &self.ends {
            let answered = r
                .responses
                .iter()
                .filter(|t| &t.name.0 == topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == *partition && p.error_code == 0 && p.base_offset >= 0);
            if let Some(p) = answered {
                usage.saw_end(topic, *partition, p.base_offset + *records as i64);
            }
        }
    }

    /// The request never got a response (the upstream or the gateway failed).
    pub fn fail(self) {
        for (_, m) in &self.topics {
            m.requests_failed.inc();
        }
    }
}

/// Judges a CreateTopics request under `policies`.
pub fn create_topics(
    metrics: &Metrics,
    policies: &PolicySet,
    principal: &str,
    frame: &Bytes,
    version: i16,
    audit: Option<&RequestAudit>,
) -> Result<Decision, HeaderError> {
    let api = ApiKey::CreateTopics;
    let (header, mut body) = split_request(frame, api, version)?;
    let request = CreateTopicsRequest::decode(&mut body, version)
        .map_err(|e| undecodable(api, version, e))?;
    let client = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    let mut rejected = HashMap::new();
    for t in &request.topics {
        let num_partitions = match (t.num_partitions, t.assignments.len()) {
            (-1, n) if n > 0 => n as i32,
            (p, _) => p,
        };
        let replication_factor = match (t.replication_factor, t.assignments.first()) {
            (-1, Some(a)) => a.broker_ids.len() as i16,
            (r, _) => r,
        };
        let new = NewTopic {
            name: t.name.0.as_str(),
            num_partitions,
            replication_factor,
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())))
                .collect(),
        };
        let mut shadowed = Shadowed::default();
        let verdict = policies.judge_new_topic_as(&new, principal, &mut shadowed);
        let site = Site {
            api: "create_topics",
            topic: new.name,
            partition: None,
            client_id: client,
            principal,
            contract_topic: policies.contract_for(new.name).map(|c| c.topic.as_str()),
            audit,
        };
        for would in shadowed.iter() {
            ShadowEvent { site, would }.emit(metrics);
        }
        if let Err(r) = verdict {
            RejectionEvent {
                site,
                rejection: &r,
            }
            .emit(metrics);
            rejected.insert(t.name.0.clone(), (r.error_code, r.message));
        } else if let Some(a) = audit {
            a.record(forwarded("create_topics", new.name.to_string(), client));
        }
    }
    if rejected.is_empty() {
        return Ok(Decision::Forward);
    }
    let order: Vec<StrBytes> = request.topics.iter().map(|t| t.name.0.clone()).collect();
    let all_refused = rejected.len() == request.topics.len();
    let mut trimmed = request.clone();
    trimmed.topics.retain(|t| !rejected.contains_key(&t.name.0));
    let merge = CreateTopicsMerge::new(version, order, rejected);
    if all_refused {
        return Ok(Decision::Respond(
            merge.refused_alone(header.correlation_id)?,
        ));
    }
    let frame = encode_request(&header, api, version, &trimmed)?;
    Ok(Decision::ForwardTrimmed {
        frame,
        merge: Box::new(merge),
    })
}

/// An administrative request's resource, forwarded: as the audit trail records it.
pub(crate) fn forwarded<'a>(
    api: &'static str,
    resource: String,
    client_id: &'a str,
) -> Decided<'a> {
    Decided {
        api,
        resource,
        client_id,
        decision: "forwarded",
        policy: None,
        rule: None,
        mode: None,
        reason: None,
    }
}

pub(crate) fn encode_request<M: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    body: &M,
) -> Result<Bytes, HeaderError> {
    join_request(header, api, version, body).map_err(|e| undecodable(api, version, e))
}

/// Fetches, from the external registry, the writer schemas a produce request names on the
/// Avro-contract topics its principal may produce to. Ids already cached cost no fetch; at most
/// [`crate::schema::registry_client::MAX_FETCHES_PER_REQUEST`] are fetched, concurrently.
pub async fn fetch_writers(
    client: &crate::schema::registry_client::RegistryClient,
    ids: Vec<u32>,
) -> ExternalWriters {
    use crate::schema::registry_client::{Fetched, RegistryError, MAX_FETCHES_PER_REQUEST};
    let mut out = ExternalWriters::default();
    let mut to_fetch = Vec::new();
    for id in ids {
        match client.cached(id) {
            Some(Some(schema)) => {
                out.known.insert(id, schema);
            }
            Some(None) => {}
            None if to_fetch.len() < MAX_FETCHES_PER_REQUEST => to_fetch.push(id),
            None => {
                out.unavailable
                    .insert(id, RegistryError::TooManyIds(MAX_FETCHES_PER_REQUEST));
            }
        }
    }
    let fetched = futures_util::future::join_all(to_fetch.iter().map(|&id| client.fetch(id))).await;
    for (id, answer) in to_fetch.into_iter().zip(fetched) {
        match answer {
            Fetched::Found(s) => {
                out.known.insert(id, s);
            }
            Fetched::Unknown => {}
            Fetched::Unavailable(why) => {
                tracing::warn!(id, error = %why, "schema registry unavailable; failing the batch with a retriable error");
                out.unavailable.insert(id, why);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(records: u64) -> PartitionVerdict {
        PartitionVerdict::Accept {
            records,
            tally: Tally {
                judged: records,
                ..Tally::default()
            },
            shadowed: Shadowed::default(),
        }
    }

    fn reject(rule: &str) -> PartitionVerdict {
        PartitionVerdict::Reject {
            rejection: Rejection {
                error_code: crate::policy::judge::INVALID_RECORD,
                message: format!("breaks {rule}"),
                record_errors: vec![(0, "bad".into())],
                policy: "contract",
                rule: rule.into(),
            },
            records: 1,
            tally: Tally::default(),
            shadowed: Shadowed::default(),
        }
    }

    fn judged<'a>(
        topic: &'a StrBytes,
        verdicts: Vec<PartitionVerdict>,
    ) -> Vec<JudgedPartition<'a>> {
        verdicts
            .into_iter()
            .enumerate()
            .map(|(i, verdict)| JudgedPartition {
                topic,
                index: i as i32,
                plan: None,
                contract: None,
                records: None,
                contract_topic: None,
                stats: None,
                verdict,
            })
            .collect()
    }

    fn kafkajs() -> regex::RegexSet {
        regex::RegexSet::new(["^kafkajs"]).unwrap()
    }

    #[test]
    fn all_or_nothing_refuses_the_accepted_partitions_naming_the_cause() {
        let topic = StrBytes::from_static_str("orders.events.v1");
        let mut j = judged(
            &topic,
            vec![accept(2), reject("order_total > 0"), accept(3)],
        );
        all_or_nothing(&mut j, "kafkajs", &kafkajs());
        for (i, p) in j.iter().enumerate() {
            let PartitionVerdict::Reject {
                rejection, records, ..
            } = &p.verdict
            else {
                panic!("partition {i} still accepted");
            };
            if i == 1 {
                assert_eq!(
                    rejection.rule, "order_total > 0",
                    "the cause is kept as it was"
                );
                continue;
            }
            assert_eq!(rejection.rule, "all_or_nothing");
            assert_eq!(rejection.error_code, crate::policy::judge::INVALID_RECORD);
            assert!(
                rejection
                    .message
                    .contains("orders.events.v1-1: breaks order_total > 0"),
                "{}",
                rejection.message
            );
            assert!(rejection.message.contains("`kafkajs`"));
            assert_eq!(*records, [2, 0, 3][i], "the records are counted as refused");
        }
        // The valid records still count as valid for the contract.
        let PartitionVerdict::Reject { tally, .. } = &j[2].verdict else {
            unreachable!()
        };
        assert_eq!(tally.judged, 3);
    }

    #[test]
    fn all_or_nothing_applies_only_to_the_listed_clients() {
        let topic = StrBytes::from_static_str("orders.events.v1");
        let mut j = judged(&topic, vec![accept(1), reject("order_total > 0")]);
        all_or_nothing(&mut j, "orders-service", &kafkajs());
        assert!(matches!(j[0].verdict, PartitionVerdict::Accept { .. }));
        all_or_nothing(&mut j, "kafkajs", &regex::RegexSet::empty());
        assert!(matches!(j[0].verdict, PartitionVerdict::Accept { .. }));
    }

    #[test]
    fn all_or_nothing_leaves_a_request_with_no_refusal_alone() {
        let topic = StrBytes::from_static_str("orders.events.v1");
        let mut j = judged(&topic, vec![accept(1), accept(1)]);
        all_or_nothing(&mut j, "kafkajs", &kafkajs());
        assert!(j
            .iter()
            .all(|p| matches!(p.verdict, PartitionVerdict::Accept { .. })));
    }
}
