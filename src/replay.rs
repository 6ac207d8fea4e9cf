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
//! - **Examples** name the partition, the offset and the refusal's message: rule, field and type,
//!   never a record's value.
//! - **Connections** are plain TCP, or TLS with `--tls` (server names verified, against
//!   `--tls-ca` or the system's trust store), and may authenticate with SASL/PLAIN (the password
//!   from a file, never the command line). SCRAM is not supported by this command.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::proxy::stream::Stream;

use crate::policy::judge::{Limits, PartitionVerdict, RequestInflater};
use crate::policy::PolicySet;
use crate::protocol::client::{call, CallError};
use crate::protocol::records::batches;

/// Why a dry run could not read the topic.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: TLS: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}: not a host name for TLS")]
    ServerName(String),
    #[error("{addr}: SASL/PLAIN authentication failed: error code {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Auth {
        addr: String,
        code: i16,
        message: Option<String>,
    },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("topic `{topic}`: {what} error code {code}")]
    Kafka {
        topic: String,
        what: &'static str,
        code: i16,
    },
    #[error("topic `{0}` does not exist")]
    NoTopic(String),
    #[error("partition {partition}: leader {leader} is not among the brokers")]
    NoLeader { partition: i32, leader: i32 },
    #[error("partition {partition}: the fetch made no progress at offset {offset}")]
    Stuck { partition: i32, offset: i64 },
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

/// The verdicts on the records read.
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
}

/// What one dry run reads, and how many examples it keeps per rule.
pub struct Request<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub last: u64,
    pub examples: usize,
    /// TLS to every broker, when the cluster's listener is TLS.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// SASL/PLAIN (user, password) on every connection.
    pub sasl_plain: Option<(String, String)>,
}

/// Reads and judges. `set` is the policy set to judge under (typically the one about to be
/// deployed).
pub async fn dry_run(req: &Request<'_>, set: &PolicySet) -> Result<DryRun, ReplayError> {
    let mut bootstrap = connect(req.bootstrap, req).await?;
    let mut metadata = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(req.topic.to_string())));
    metadata.topics = Some(vec![t]);
    let md = call(&mut bootstrap, 1, 12, &metadata).await?;
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
    let share = req.last.div_ceil(partitions.len().max(1) as u64);

    let decoders = set.compile_decoders();
    let plan = set.plan_topic(req.topic);
    let mut tally = Tally::new(req.examples);
    let mut out = DryRun {
        topic: req.topic.to_string(),
        ..DryRun::default()
    };
    let mut leaders: HashMap<i32, Stream> = HashMap::new();
    let mut correlation = 10;
    for (partition, leader) in partitions {
        let addr = brokers
            .get(&leader)
            .ok_or(ReplayError::NoLeader { partition, leader })?;
        let conn = match leaders.entry(leader) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(connect(addr, req).await?),
        };
        let earliest = offset_at(conn, req.topic, partition, -2, &mut correlation).await?;
        let end = offset_at(conn, req.topic, partition, -1, &mut correlation).await?;
        let start = earliest.max(end - i64::try_from(share).unwrap_or(i64::MAX));
        out.ranges.push((partition, start, end));
        let mut next = start;
        while next < end {
            correlation += 1;
            let records = fetch(conn, req.topic, partition, next, correlation).await?;
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
                // The batch as the producer wrote it: batch-level rules, once.
                let batch_refusal = match &plan {
                    Err(r) => Some((r.policy, r.rule.clone(), r.message.clone())),
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
                        None => out.accepted += 1,
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
    }
    out.by_rule = tally.into_sorted();
    Ok(out)
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
        let _ = writeln!(s, "would accept: {}", self.accepted);
        let _ = writeln!(s, "would reject: {}", self.rejected);
        for r in &self.by_rule {
            let _ = writeln!(s, "  {} ({}): {}", r.rule, r.policy, r.records);
            for (p, o, m) in &r.examples {
                let _ = writeln!(s, "    e.g. partition {p} offset {o}: {m}");
            }
        }
        s
    }
}

/// A connection to `addr`, with TLS and SASL/PLAIN as `req` asks.
async fn connect(addr: &str, req: &Request<'_>) -> Result<Stream, ReplayError> {
    let mut stream = open(addr, req.tls.as_ref()).await?;
    if let Some((user, password)) = &req.sasl_plain {
        plain(&mut stream, addr, user, password).await?;
    }
    Ok(stream)
}

/// SaslHandshake v1 for PLAIN, then SaslAuthenticate v2 with `NUL user NUL password`.
async fn plain(
    stream: &mut Stream,
    addr: &str,
    user: &str,
    password: &str,
) -> Result<(), ReplayError> {
    use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
    let refused = |code, message: Option<String>| ReplayError::Auth {
        addr: addr.to_string(),
        code,
        message,
    };
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str("PLAIN");
    let answer = call(stream, 1, 1, &hs).await?;
    if answer.error_code != 0 {
        return Err(refused(answer.error_code, None));
    }
    let mut auth = SaslAuthenticateRequest::default();
    auth.auth_bytes = Bytes::from(format!("\0{user}\0{password}").into_bytes());
    let answer = call(stream, 2, 2, &auth).await?;
    if answer.error_code != 0 {
        let message = answer.error_message.map(|m| m.to_string());
        return Err(refused(answer.error_code, message));
    }
    Ok(())
}

async fn open(addr: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Stream, ReplayError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ReplayError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| ReplayError::ServerName(addr.to_string()))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|source| ReplayError::Tls {
            addr: addr.to_string(),
            source,
        })?;
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
        stream,
    ))))
}

/// The offset ListOffsets gives for `timestamp` (-2 earliest, -1 latest).
async fn offset_at(
    conn: &mut Stream,
    topic: &str,
    partition: i32,
    timestamp: i64,
    correlation: &mut i32,
) -> Result<i64, ReplayError> {
    *correlation += 1;
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
    let resp = call(conn, *correlation, 7, &req).await?;
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
    conn: &mut Stream,
    topic: &str,
    partition: i32,
    offset: i64,
    correlation: i32,
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
    let resp = call(conn, correlation, 12, &req).await?;
    let part = resp.responses.first().and_then(|t| t.partitions.first());
    let part = answered(part, |p| p.error_code, topic, "Fetch")?;
    Ok(part.records.clone().unwrap_or_default())
}
