//! `meshgate replay --dry-run`: what a policy change would do to the data already on a topic.
//!
//! It reads the last records of a topic straight from the cluster (Metadata, then ListOffsets and
//! Fetch on each partition's leader), judges every record under a policy set as the gateway
//! would judge it on produce, and counts the verdicts by rule, with a few examples each. It
//! writes nothing.
//!
//! - **Which records.** `--last N` is split evenly over the partitions (rounded up): each
//!   partition is read from `max(log start, end - ceil(N / partitions))` to its end offset at the
//!   time of the ListOffsets. Transaction markers are skipped; records of aborted transactions are
//!   judged like any other (they were produced).
//! - **How they are judged.** The topic's plan (`naming`, `require_contract`; not `producers:`,
//!   which is about who writes, not what), then each fetched batch as a whole under
//!   `judge_partition` with `acks=all` (codec, idempotence and control-batch rules apply to the
//!   batch the producer really wrote), then each record alone (`judge_record`: key, headers, size,
//!   schema, validity rules). A batch-level refusal counts every record of the batch under its
//!   rule. Shadowed rules count as accepted, as they would on the wire.
//! - **Protected fields** (a contract with `protect:`) are stored as envelopes. With the
//!   gateway's keys (`Request::keys`, from `--config`) a dry run of a JSON contract's topic opens
//!   them first (`protect::fetch::opened_for_judging`), so its rules judge the plaintext as the
//!   gateway did on produce; otherwise they judge the envelopes, and `DryRun::protected` says so.
//!   A replay `--to` never opens them.
//! - **Examples** name the partition, the offset and the refusal's message: rule, field and type,
//!   never a record's value.
//! - **Connections** are plain TCP, or TLS with `--tls` (server names verified, against
//!   `--tls-ca` or the system's trust store), and may authenticate with SASL/PLAIN (the password
//!   from a file, never the command line). SCRAM is not supported by this command.

use std::collections::{BTreeMap, HashMap};

use crate::own_client::batch::OwnedRecord;
use crate::own_client::producer::{Producer, WriteError};
use crate::own_client::{ClientError, Conn, Settings};
use crate::policy::judge::{Limits, PartitionVerdict, RequestInflater};
use crate::policy::PolicySet;
use crate::protect::keys::KeyRing;
use crate::protocol::records::{batches, RecordView};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

/// Why a replay could not read the topic or write the records.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("topic `{topic}`: {what} error code {code}")]
    Kafka {
        topic: String,
        what: &'static str,
        code: i16,
    },
    #[error("topic `{0}` does not exist")]
    NoTopic(String),
    /// `--to` a topic whose contract encrypts fields: replay writes through its own producer,
    /// which does not seal, so the records would land in plaintext.
    #[error("--to `{0}`: its contract encrypts fields (`protect: encrypt`), and replay writes with its own producer, which does not seal them; produce to it through the gateway instead")]
    Protected(String),
    #[error("partition {partition}: leader {leader} is not among the brokers")]
    NoLeader { partition: i32, leader: i32 },
    #[error("partition {partition}: the fetch made no progress at offset {offset}")]
    Stuck { partition: i32, offset: i64 },
    #[error("writing to `{topic}`: {source} ({moved} record(s) were written before)")]
    Write {
        topic: String,
        moved: u64,
        source: WriteError,
    },
}

/// One rule's count, with examples.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct RuleCount {
    pub policy: &'static str,
    pub rule: String,
    pub records: u64,
    /// (partition, offset, message), the first few.
    pub examples: Vec<(i32, i64, String)>,
}

/// The verdicts on the records read, and for a replay `--to`, what was written.
#[derive(Debug, Default, Serialize)]
pub struct DryRun {
    pub topic: String,
    /// (partition, first offset read, end offset).
    pub ranges: Vec<(i32, i64, i64)>,
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// By rule, most records first.
    pub by_rule: Vec<RuleCount>,
    /// The topic the accepted records were written to (`--to`); none for a dry run.
    pub to: Option<String>,
    /// Records written to `to`.
    pub moved: u64,
    /// For a topic whose contract protects fields: how its envelopes were judged.
    pub protected: Option<Envelopes>,
}

/// How a dry run judged the protected fields of the topic it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelopes {
    /// Opened with the gateway's keys: the rules saw the plaintext (the mask where a key is
    /// gone).
    Opened,
    /// As stored, `mg1:` envelopes: no keys were given (`--config`), or the contract is Avro, or
    /// the run writes (`--to`). A rule about a protected field's value may count envelopes.
    AsStored,
}

/// What one replay reads, and how many examples it keeps per rule.
pub struct Request<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    /// The latest N records over all partitions; `None`: every record.
    pub last: Option<u64>,
    pub examples: usize,
    /// How to connect and authenticate (TLS, SASL).
    pub settings: Settings,
    /// Write the records that pass to this topic (else judge only).
    pub to: Option<&'a str>,
    /// The gateway's data keys (`protect:` of its config): with them a dry run opens the
    /// protected fields of a JSON contract's topic before judging, as the gateway judged the
    /// plaintext on produce. Never used with `to` (what is written stays as stored).
    pub keys: Option<&'a KeyRing>,
}

/// Records written per produce call at most.
const CHUNK: usize = 500;

/// Reads and judges; with `req.to`, writes the records that pass to it. `set` is the policy set
/// to judge under (typically the one about to be deployed, or the one in force).
pub async fn dry_run(req: &Request<'_>, set: &PolicySet) -> Result<DryRun, ReplayError> {
    if let Some(to) = req.to {
        let encrypts = set
            .contract_for(to)
            .and_then(|c| c.protect.as_ref())
            .is_some_and(|p| p.encrypts());
        if encrypts {
            return Err(ReplayError::Protected(to.to_string()));
        }
    }
    let mut bootstrap = Conn::connect(req.bootstrap, &req.settings).await?;
    let mut metadata = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(req.topic.to_string())));
    metadata.topics = Some(vec![t]);
    metadata.allow_auto_topic_creation = false;
    let (_, md) = bootstrap.call(12, &metadata).await?;
    let topic = md
        .topics
        .first()
        .ok_or_else(|| ReplayError::NoTopic(req.topic.to_string()))?;
    match topic.error_code {
        0 => {}
        3 => return Err(ReplayError::NoTopic(req.topic.to_string())),
        code => {
            return Err(ReplayError::Kafka {
                topic: req.topic.to_string(),
                what: "Metadata",
                code,
            })
        }
    }
    let brokers: HashMap<i32, String> = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let mut partitions: Vec<(i32, i32)> = topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    partitions.sort_unstable();
    let share = req.last.map(|n| n.div_ceil(partitions.len().max(1) as u64));

    let decoders = set.compile_decoders();
    // Records are judged as a produce to where they go: the `--to` topic, or where they are.
    let target = req.to.unwrap_or(req.topic);
    let plan = set.plan_topic(target);
    let producer = req.to.map(|_| {
        Producer::start(
            vec![req.bootstrap.to_string()],
            req.settings.clone(),
            std::time::Duration::from_secs(30),
        )
    });
    let mut tally = Tally::new(req.examples);
    let mut out = DryRun {
        topic: req.topic.to_string(),
        to: req.to.map(str::to_string),
        ..DryRun::default()
    };
    // A dry run opens the envelopes of a JSON contract's topic when it has the keys.
    let protected = set
        .contract_for(req.topic)
        .and_then(|c| Some((c, c.protect.as_ref()?)));
    let opener = match (protected, req.to, req.keys) {
        (Some((c, p)), None, Some(keys)) if c.avro_reader.is_none() => {
            out.protected = Some(Envelopes::Opened);
            Some((p, keys, Limits::default().max_inflated_bytes))
        }
        (Some(_), _, _) => {
            out.protected = Some(Envelopes::AsStored);
            None
        }
        (None, _, _) => None,
    };
    let mut leaders: HashMap<i32, Conn> = HashMap::new();
    for (partition, leader) in partitions {
        let addr = brokers
            .get(&leader)
            .ok_or(ReplayError::NoLeader { partition, leader })?;
        let conn = match leaders.entry(leader) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Conn::connect(addr, &req.settings).await?)
            }
        };
        let earliest = offset_at(conn, req.topic, partition, -2).await?;
        let end = offset_at(conn, req.topic, partition, -1).await?;
        let start = match share {
            Some(n) => earliest.max(end - i64::try_from(n).unwrap_or(i64::MAX)),
            None => earliest,
        };
        out.ranges.push((partition, start, end));
        let mut next = start;
        // Records to write, by destination hint.
        let mut chunk: Vec<OwnedRecord> = Vec::new();
        let mut chunk_hint = partition;
        while next < end {
            let mut records = fetch(conn, req.topic, partition, next).await?;
            if let Some((protect, keys, max)) = opener {
                if let Some(open) = crate::protect::fetch::opened_for_judging(
                    &records, req.topic, protect, keys, max,
                )
                .await
                {
                    records = Bytes::from(open);
                }
            }
            let before = next;
            for batch in batches(&records).map_while(Result::ok) {
                if batch.is_control() {
                    next = next.max(batch.base_offset + i64::from(batch.records_count.max(1)));
                    continue;
                }
                let limits = Limits::default();
                let mut inflater = RequestInflater::new(&limits, false);
                let Ok(inflated) = inflater.inflate(&batch) else {
                    break;
                };
                // A dry run judges the batch as the producer wrote it: batch-level rules, once.
                // A replay writes its own batches (uncompressed, idempotent, acks=all): only the
                // records are judged.
                let batch_refusal = match &plan {
                    Err(r) => Some((r.policy, r.rule.clone(), r.message.clone())),
                    Ok(_) if req.to.is_some() => None,
                    Ok(plan) => {
                        match set.judge_partition(plan, -1, Some(batch.bytes), &limits, &decoders) {
                            PartitionVerdict::Reject { rejection, .. }
                                if rejection.record_errors.is_empty() =>
                            {
                                Some((rejection.policy, rejection.rule, rejection.message))
                            }
                            _ => None,
                        }
                    }
                };
                for record in inflated.iter().map_while(Result::ok) {
                    let offset = batch.base_offset + i64::from(record.offset_delta);
                    next = next.max(offset + 1);
                    if offset < start || offset >= end {
                        continue;
                    }
                    out.records += 1;
                    let verdict = match (&batch_refusal, &plan) {
                        (Some(refusal), _) => Some(refusal.clone()),
                        (None, Ok(plan)) => set.judge_record(plan, &record, &decoders),
                        (None, Err(_)) => unreachable!("a refused plan refuses every batch"),
                    };
                    match verdict {
                        None => {
                            out.accepted += 1;
                            if req.to.is_some() {
                                let (owned, hint) =
                                    as_sent(&record, batch.base_timestamp, partition);
                                if hint != chunk_hint || chunk.len() >= CHUNK {
                                    write(&producer, req, &mut chunk, chunk_hint, &mut out).await?;
                                }
                                chunk_hint = hint;
                                chunk.push(owned);
                            }
                        }
                        Some((policy, rule, message)) => {
                            out.rejected += 1;
                            tally.add(policy, rule, partition, offset, message);
                        }
                    }
                }
            }
            if next == before {
                return Err(ReplayError::Stuck {
                    partition,
                    offset: next,
                });
            }
        }
        write(&producer, req, &mut chunk, chunk_hint, &mut out).await?;
    }
    out.by_rule = tally.into_sorted();
    Ok(out)
}

/// A record as its producer sent it: meshgate's `meshgate.*` headers dropped, and the partition
/// it was first sent to (`meshgate.partition`, else the one it is read from) as the hint.
fn as_sent(record: &RecordView<'_>, base_timestamp: i64, partition: i32) -> (OwnedRecord, i32) {
    let copy = |b: &[u8]| Bytes::copy_from_slice(b);
    let mut hint = partition;
    let mut headers = Vec::new();
    for (k, v) in record.headers() {
        if k == b"meshgate.partition" {
            if let Some(p) = v.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()) {
                hint = p;
            }
        }
        if !k.starts_with(b"meshgate.") {
            headers.push((copy(k), v.map(copy)));
        }
    }
    let owned = OwnedRecord {
        key: record.key.map(copy),
        value: record.value.map(copy),
        headers,
        timestamp: base_timestamp.saturating_add(record.timestamp_delta),
    };
    (owned, hint)
}

/// Writes the chunk to `req.to` and empties it.
async fn write(
    producer: &Option<Producer>,
    req: &Request<'_>,
    chunk: &mut Vec<OwnedRecord>,
    hint: i32,
    out: &mut DryRun,
) -> Result<(), ReplayError> {
    let (Some(producer), Some(to)) = (producer, req.to) else {
        return Ok(());
    };
    if chunk.is_empty() {
        return Ok(());
    }
    let records = std::mem::take(chunk);
    let n = records.len() as u64;
    let written = producer
        .write(std::sync::Arc::from(to), hint, records)
        .await
        .unwrap_or(Err(WriteError::Stopped));
    match written {
        Ok(_) => {
            out.moved += n;
            Ok(())
        }
        Err(source) => Err(ReplayError::Write {
            topic: to.to_string(),
            moved: out.moved,
            source,
        }),
    }
}

struct Tally {
    examples: usize,
    by_rule: BTreeMap<(&'static str, String), RuleCount>,
}

impl Tally {
    fn new(examples: usize) -> Self {
        Tally {
            examples,
            by_rule: BTreeMap::new(),
        }
    }

    fn add(
        &mut self,
        policy: &'static str,
        rule: String,
        partition: i32,
        offset: i64,
        message: String,
    ) {
        let entry = self
            .by_rule
            .entry((policy, rule.clone()))
            .or_insert_with(|| RuleCount {
                policy,
                rule,
                ..RuleCount::default()
            });
        entry.records += 1;
        if entry.examples.len() < self.examples {
            entry.examples.push((partition, offset, message));
        }
    }

    fn into_sorted(self) -> Vec<RuleCount> {
        let mut v: Vec<RuleCount> = self.by_rule.into_values().collect();
        v.sort_by(|a, b| b.records.cmp(&a.records).then_with(|| a.rule.cmp(&b.rule)));
        v
    }
}

impl DryRun {
    /// The report a terminal shows.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "read {} record(s) of `{}` ({})",
            self.records,
            self.topic,
            self.ranges
                .iter()
                .map(|(p, a, b)| format!("partition {p}: offsets {a}..{b}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match &self.to {
            Some(to) => {
                let _ = writeln!(s, "moved to `{to}`: {}", self.moved);
                let _ = writeln!(
                    s,
                    "left in `{}` (still refused): {}",
                    self.topic, self.rejected
                );
            }
            None => {
                match self.protected {
                    Some(Envelopes::Opened) => {
                        let _ = writeln!(s, "protected fields: opened with the gateway's keys");
                    }
                    Some(Envelopes::AsStored) => {
                        let _ = writeln!(
                            s,
                            "protected fields: judged as stored (envelopes); give --config with \
                             the gateway's `protect:` keys to judge a JSON contract's plaintext"
                        );
                    }
                    None => {}
                }
                let _ = writeln!(s, "would accept: {}", self.accepted);
                let _ = writeln!(s, "would reject: {}", self.rejected);
            }
        }
        for r in &self.by_rule {
            let _ = writeln!(s, "  {} ({}): {}", r.rule, r.policy, r.records);
            for (p, o, m) in &r.examples {
                let _ = writeln!(s, "    e.g. partition {p} offset {o}: {m}");
            }
        }
        s
    }
}

/// The offset ListOffsets gives for `timestamp` (-2 earliest, -1 latest).
async fn offset_at(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<i64, ReplayError> {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.current_leader_epoch = -1;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let (_, resp) = conn.call(7, &req).await?;
    let part = resp.topics.first().and_then(|t| t.partitions.first());
    let part = answered(part, |p| p.error_code, topic, "ListOffsets")?;
    Ok(part.offset)
}

/// The one partition a single-partition request was answered for, unless it failed.
fn answered<'a, P>(
    part: Option<&'a P>,
    error_code: impl Fn(&P) -> i16,
    topic: &str,
    what: &'static str,
) -> Result<&'a P, ReplayError> {
    let part = part.ok_or_else(|| ReplayError::NoTopic(topic.to_string()))?;
    match error_code(part) {
        0 => Ok(part),
        code => Err(ReplayError::Kafka {
            topic: topic.to_string(),
            what,
            code,
        }),
    }
}

/// One Fetch of `partition` from `offset`: the record batches returned.
async fn fetch(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Bytes, ReplayError> {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.current_leader_epoch = -1;
    p.fetch_offset = offset;
    p.log_start_offset = -1;
    p.partition_max_bytes = 8 * 1024 * 1024;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = 16 * 1024 * 1024;
    req.session_epoch = -1;
    req.topics = vec![t];
    let (_, resp) = conn.call(12, &req).await?;
    let part = resp.responses.first().and_then(|t| t.partitions.first());
    let part = answered(part, |p| p.error_code, topic, "Fetch")?;
    Ok(part.records.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replay_to_a_topic_whose_contract_encrypts_is_refused_before_anything_is_read() {
        let set = crate::policy::load::compile_text(
            "p.yaml",
            "contract:\n  name: c\n  owner: o\n  topic: pii.v1\n  schema:\n    format: json\n    definition: {\"type\": \"record\", \"name\": \"R\", \"fields\": [{\"name\": \"email\", \"type\": \"string\"}]}\n    classification: {email: pii}\n  protect: {pii: encrypt}\n",
        );
        let req = Request {
            // Nothing listens here: the refusal comes first.
            bootstrap: "127.0.0.1:1",
            topic: "src.v1",
            last: None,
            examples: 0,
            settings: Settings::default(),
            to: Some("pii.v1"),
            keys: None,
        };
        match dry_run(&req, &set).await {
            Err(ReplayError::Protected(t)) => assert_eq!(t, "pii.v1"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
