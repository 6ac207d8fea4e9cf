//! meshgate's own idempotent producer: the dead-letter topics are written through it.
//!
//! - **One worker task** owns the connections, the cluster metadata it needs, the producer id and
//!   the sequence numbers. Writers hand it jobs over a bounded channel and await a oneshot
//!   answer; a full channel is an immediate [`WriteError::Busy`], never a wait.
//! - **Batching.** The worker takes every job waiting when it wakes and writes one batch per
//!   destination partition (up to [`MAX_BATCH_BYTES`]), one Produce request per leader, one
//!   request in flight at a time. `acks=all`.
//! - **Idempotent.** The worker gets a producer id with InitProducerId and numbers every batch.
//!   A batch is retried with the same numbers after a connection loss, a leader change or a
//!   broker restart, so the broker writes it once; DUPLICATE_SEQUENCE_NUMBER is success.
//! - **A deadline per write** (`timeout`): a job not written by then is answered
//!   [`WriteError::TimedOut`]. Its outcome is then unknown (it may have been written), so the
//!   worker takes a new producer id before the next write, never reusing numbers that may be in
//!   the log. The caller answers its client with a retriable error; a retry may write the records
//!   again (at least once, never lost).
//! - **Destination partition:** the caller's hint (the source partition) modulo the topic's
//!   partition count, so that records of one source partition keep their order.
//! - A topic the cluster does not know is answered at once ([`WriteError::UnknownTopic`]):
//!   meshgate never creates a dead-letter topic (Metadata is sent with auto-creation off).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{MetadataRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot};

use super::batch::{encode, OwnedRecord, Stamp};
use super::{ClientError, Conn, Settings};

/// A destination batch is cut at about this many record bytes; the jobs beyond wait for the
/// next request (Kafka's default `max.message.bytes` is 1 MiB).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Jobs waiting for the worker at most; beyond, writes are refused at once.
pub const QUEUE: usize = 1024;

/// Why records were not written.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum WriteError {
    #[error("the producer's queue is full")]
    Busy,
    #[error("the producer has stopped")]
    Stopped,
    #[error("topic `{0}` does not exist (meshgate does not create it)")]
    UnknownTopic(String),
    #[error("topic `{topic}` partition {partition}: refused with error code {code}")]
    Refused {
        topic: String,
        partition: i32,
        code: i16,
    },
    #[error("not written within {secs:.1} s: {last}")]
    TimedOut { secs: f64, last: String },
    /// The dead-letter spool holds its bound of undelivered bytes.
    #[error("the dead-letter spool is full ({waiting} of {max} bytes wait for delivery)")]
    SpoolFull { waiting: u64, max: u64 },
    /// The dead-letter spool could not append.
    #[error("the dead-letter spool cannot append: {0}")]
    Spool(String),
}

/// Where records were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub partition: i32,
    pub base_offset: i64,
}

struct Job {
    topic: Arc<str>,
    hint: i32,
    records: Vec<OwnedRecord>,
    bytes: usize,
    reply: oneshot::Sender<Result<Written, WriteError>>,
}

/// The handle writers hold. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Job>,
}

impl Producer {
    /// Starts the worker, on the current runtime (or a thread of its own outside one). It runs
    /// until every handle is dropped, so that writes owed to connections still draining at
    /// shutdown are finished.
    pub fn start(bootstrap: Vec<String>, settings: Settings, timeout: Duration) -> Producer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = Worker {
            bootstrap,
            settings,
            timeout,
            conns: HashMap::new(),
            nodes: HashMap::new(),
            leaders: HashMap::new(),
            id: None,
            sequences: HashMap::new(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(worker.run(rx))),
            // Started outside a runtime (a tool, a test): the worker gets a thread of its own.
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("meshgate-producer".into())
                    .spawn(move || {
                        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            rt.block_on(worker.run(rx));
                        }
                    });
            }
        }
        Producer { tx }
    }

    /// Writes `records` to `topic`; the answer comes when they are written or cannot be.
    pub fn write(
        &self,
        topic: Arc<str>,
        hint: i32,
        records: Vec<OwnedRecord>,
    ) -> oneshot::Receiver<Result<Written, WriteError>> {
        let (reply, answer) = oneshot::channel();
        let bytes = records.iter().map(record_bytes).sum();
        let job = Job {
            topic,
            hint,
            records,
            bytes,
            reply,
        };
        if let Err(e) = self.tx.try_send(job) {
            let (job, why) = match e {
                mpsc::error::TrySendError::Full(j) => (j, WriteError::Busy),
                mpsc::error::TrySendError::Closed(j) => (j, WriteError::Stopped),
            };
            let _ = job.reply.send(Err(why));
        }
        answer
    }
}

fn record_bytes(r: &OwnedRecord) -> usize {
    24 + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|(k, v)| 4 + k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// What went wrong on one attempt, kept for the timeout's message.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0} error code {1}")]
    Kafka(&'static str, i16),
    #[error("no broker is known")]
    NoBroker,
}

struct Worker {
    bootstrap: Vec<String>,
    settings: Settings,
    timeout: Duration,
    /// Open connections by node id (-1: a bootstrap address).
    conns: HashMap<i32, Conn>,
    /// Broker addresses by node id, from Metadata.
    nodes: HashMap<i32, String>,
    /// The leader of each partition (-1: none), by topic.
    leaders: HashMap<Arc<str>, Vec<i32>>,
    /// (producer id, epoch).
    id: Option<(i64, i16)>,
    /// The next sequence number of each destination partition, under `id`.
    sequences: HashMap<(Arc<str>, i32), i32>,
}

/// The jobs of one destination batch: ((topic, partition), job indexes, record bytes).
type Group = ((Arc<str>, i32), Vec<usize>, usize);

/// A job on its way: its destination partition once the topic's metadata is known.
struct Pending {
    job: Job,
    partition: Option<i32>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < QUEUE {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.deliver(jobs).await;
        }
    }

    async fn deliver(&mut self, jobs: Vec<Job>) {
        let deadline = Instant::now() + self.timeout;
        let mut pending: Vec<Pending> = jobs
            .into_iter()
            .map(|job| Pending {
                job,
                partition: None,
            })
            .collect();
        let mut backoff = Duration::from_millis(50);
        let mut last = String::new();
        loop {
            pending.retain(|p| !p.job.reply.is_closed());
            if pending.is_empty() {
                return;
            }
            let progressed = match self.attempt(&mut pending).await {
                Ok(progressed) => progressed,
                Err(e) => {
                    last = e.to_string();
                    false
                }
            };
            if pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(jobs = pending.len(), error = %last, "own producer: records not written in time");
                for p in pending {
                    let _ = p.job.reply.send(Err(WriteError::TimedOut {
                        secs: self.timeout.as_secs_f64(),
                        last: last.clone(),
                    }));
                }
                // What was sent may be in the log: never reuse its sequence numbers.
                self.id = None;
                self.sequences.clear();
                return;
            }
            if !progressed {
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// One round: metadata for the topics not known, a producer id, then one request per
    /// leader. Written and refused jobs are answered and removed from `pending`. True when some
    /// job was answered.
    async fn attempt(&mut self, pending: &mut Vec<Pending>) -> Result<bool, Attempt> {
        let mut answered = false;
        let unknown: Vec<Arc<str>> = {
            let mut v: Vec<Arc<str>> = pending
                .iter()
                .filter(|p| !self.leaders.contains_key(&p.job.topic))
                .map(|p| p.job.topic.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if !unknown.is_empty() {
            let missing = self.metadata(&unknown).await?;
            let results: HashMap<usize, Result<Written, WriteError>> = pending
                .iter()
                .enumerate()
                .filter(|(_, p)| missing.contains(&p.job.topic))
                .map(|(i, p)| (i, Err(WriteError::UnknownTopic(p.job.topic.to_string()))))
                .collect();
            answered |= answer(pending, results);
        }
        if self.id.is_none() {
            self.init_producer_id().await?;
        }
        let (producer_id, producer_epoch) = self.id.expect("set above");
        // Destination partitions and their leaders.
        let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
        // Topics with a partition that had no leader: asked about again next round.
        let mut leaderless: Vec<Arc<str>> = Vec::new();
        for (i, p) in pending.iter_mut().enumerate() {
            let Some(leaders) = self.leaders.get(&p.job.topic) else {
                continue;
            };
            if leaders.is_empty() {
                leaderless.push(p.job.topic.clone());
                continue;
            }
            let partition = p.job.hint.rem_euclid(leaders.len() as i32);
            p.partition = Some(partition);
            let leader = leaders[partition as usize];
            if leader >= 0 {
                by_leader.entry(leader).or_default().push(i);
            } else {
                leaderless.push(p.job.topic.clone());
            }
        }
        for topic in leaderless {
            self.leaders.remove(&topic);
        }
        let mut done: Vec<(usize, Result<Written, WriteError>)> = Vec::new();
        let mut last_error = None;
        for (leader, members) in by_leader {
            // One batch per destination partition, in job order, up to the size cut.
            let mut groups: Vec<Group> = Vec::new();
            for i in members {
                let p = &pending[i];
                let key = (p.job.topic.clone(), p.partition.expect("set above"));
                match groups.iter_mut().find(|(k, _, _)| *k == key) {
                    Some((_, jobs, bytes)) => {
                        if *bytes + p.job.bytes <= MAX_BATCH_BYTES {
                            jobs.push(i);
                            *bytes += p.job.bytes;
                        }
                    }
                    None => groups.push((key, vec![i], p.job.bytes)),
                }
            }
            let mut request = ProduceRequest::default();
            request.acks = -1;
            request.timeout_ms = (self.timeout.as_millis().min(30_000) as i32).max(1000);
            let mut counts = Vec::with_capacity(groups.len());
            for ((topic, partition), jobs, _) in &groups {
                let records: Vec<OwnedRecord> = jobs
                    .iter()
                    .flat_map(|&i| pending[i].job.records.iter().cloned())
                    .collect();
                let base_sequence = *self
                    .sequences
                    .get(&(topic.clone(), *partition))
                    .unwrap_or(&0);
                let batch = encode(
                    &records,
                    Stamp {
                        producer_id,
                        producer_epoch,
                        base_sequence,
                    },
                );
                counts.push(records.len());
                let mut data = PartitionProduceData::default();
                data.index = *partition;
                data.records = Some(batch);
                match request
                    .topic_data
                    .iter_mut()
                    .find(|t| t.name.0.as_str() == &**topic)
                {
                    Some(t) => t.partition_data.push(data),
                    None => {
                        let mut t = TopicProduceData::default();
                        t.name = TopicName(StrBytes::from_string(topic.to_string()));
                        t.partition_data.push(data);
                        request.topic_data.push(t);
                    }
                }
            }
            let answer = match self.conn(leader).await {
                Ok(conn) => conn.call(9, &request).await,
                Err(e) => Err(e),
            };
            let response = match answer {
                Ok((_, r)) => r,
                Err(e) => {
                    // The request may or may not have been written: retried with the same
                    // sequence numbers, the broker writes it at most once.
                    self.conns.remove(&leader);
                    self.leaders.clear();
                    last_error = Some(Attempt::Client(e));
                    continue;
                }
            };
            for (g, ((topic, partition), jobs, _)) in groups.iter().enumerate() {
                let part = response
                    .responses
                    .iter()
                    .filter(|t| t.name.0.as_str() == &**topic)
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == *partition);
                let Some(part) = part else {
                    last_error = Some(Attempt::Kafka("Produce: partition missing,", -1));
                    continue;
                };
                match classify(part.error_code) {
                    Outcome::Written => {
                        let next = self
                            .sequences
                            .entry((topic.clone(), *partition))
                            .or_insert(0);
                        *next = advance(*next, counts[g]);
                        for &i in jobs {
                            done.push((
                                i,
                                Ok(Written {
                                    partition: *partition,
                                    base_offset: part.base_offset,
                                }),
                            ));
                        }
                    }
                    Outcome::Retry => {
                        self.leaders.remove(topic);
                        last_error = Some(Attempt::Kafka("Produce", part.error_code));
                    }
                    Outcome::NewProducerId => {
                        self.id = None;
                        self.sequences.clear();
                        last_error = Some(Attempt::Kafka("Produce", part.error_code));
                    }
                    Outcome::Refused => {
                        for &i in jobs {
                            done.push((
                                i,
                                Err(WriteError::Refused {
                                    topic: topic.to_string(),
                                    partition: *partition,
                                    code: part.error_code,
                                }),
                            ));
                        }
                    }
                }
            }
        }
        answered |= answer(pending, done.into_iter().collect());
        match last_error {
            Some(e) if !answered => Err(e),
            _ => Ok(answered),
        }
    }

    /// A connection to `node` (-1: any bootstrap address), opened when needed.
    async fn conn(&mut self, node: i32) -> Result<&mut Conn, ClientError> {
        if !self.conns.contains_key(&node) {
            let addrs: Vec<String> = match self.nodes.get(&node) {
                Some(a) if node >= 0 => vec![a.clone()],
                _ => self.bootstrap.clone(),
            };
            let mut last = None;
            for addr in addrs {
                match Conn::connect(&addr, &self.settings).await {
                    Ok(c) => {
                        self.conns.insert(node, c);
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    /// Any connection: an open one, else a bootstrap address.
    async fn any_conn(&mut self) -> Result<(i32, &mut Conn), Attempt> {
        let node = self.conns.keys().next().copied().unwrap_or(-1);
        if self.bootstrap.is_empty() && node == -1 {
            return Err(Attempt::NoBroker);
        }
        Ok((node, self.conn(node).await?))
    }

    /// Learns the leaders of `topics` (and the brokers). Returns the topics that do not exist.
    async fn metadata(&mut self, topics: &[Arc<str>]) -> Result<Vec<Arc<str>>, Attempt> {
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = false;
        req.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut m = MetadataRequestTopic::default();
                    m.name = Some(TopicName(StrBytes::from_string(t.to_string())));
                    m
                })
                .collect(),
        );
        let (node, conn) = self.any_conn().await?;
        let resp = match conn.call(12, &req).await {
            Ok((_, r)) => r,
            Err(e) => {
                self.conns.remove(&node);
                return Err(e.into());
            }
        };
        for b in &resp.brokers {
            self.nodes
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let mut missing = Vec::new();
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.as_str()) else {
                continue;
            };
            let Some(topic) = topics.iter().find(|x| &***x == name) else {
                continue;
            };
            match t.error_code {
                0 => {
                    let count = t
                        .partitions
                        .iter()
                        .map(|p| p.partition_index + 1)
                        .max()
                        .unwrap_or(0)
                        .max(0) as usize;
                    let mut leaders = vec![-1; count];
                    for p in &t.partitions {
                        if p.error_code == 0 && p.partition_index >= 0 {
                            leaders[p.partition_index as usize] = p.leader_id.0;
                        }
                    }
                    self.leaders.insert(topic.clone(), leaders);
                }
                3 => missing.push(topic.clone()),
                code => return Err(Attempt::Kafka("Metadata", code)),
            }
        }
        Ok(missing)
    }

    async fn init_producer_id(&mut self) -> Result<(), Attempt> {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = -1;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let (node, conn) = self.any_conn().await?;
        let resp = match conn.call(4, &req).await {
            Ok((_, r)) => r,
            Err(e) => {
                self.conns.remove(&node);
                return Err(e.into());
            }
        };
        if resp.error_code != 0 {
            return Err(Attempt::Kafka("InitProducerId", resp.error_code));
        }
        self.id = Some((resp.producer_id.0, resp.producer_epoch));
        self.sequences.clear();
        tracing::info!(
            producer_id = resp.producer_id.0,
            epoch = resp.producer_epoch,
            "own producer: idempotent producer id"
        );
        Ok(())
    }
}

/// Sends each result to its job and removes those jobs, keeping the others in order. True when
/// any was answered.
fn answer(
    pending: &mut Vec<Pending>,
    mut results: HashMap<usize, Result<Written, WriteError>>,
) -> bool {
    if results.is_empty() {
        return false;
    }
    let all = std::mem::take(pending);
    for (i, p) in all.into_iter().enumerate() {
        match results.remove(&i) {
            Some(result) => {
                let _ = p.job.reply.send(result);
            }
            None => pending.push(p),
        }
    }
    true
}

/// What a partition's Produce error code means for the batch.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Written,
    Retry,
    NewProducerId,
    Refused,
}

fn classify(code: i16) -> Outcome {
    match code {
        // DUPLICATE_SEQUENCE_NUMBER: an earlier attempt was written.
        0 | 46 => Outcome::Written,
        // UNKNOWN_TOPIC_OR_PARTITION (stale metadata), LEADER_NOT_AVAILABLE,
        // NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NETWORK_EXCEPTION, NOT_ENOUGH_REPLICAS(_AFTER_APPEND),
        // KAFKA_STORAGE_ERROR, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, THROTTLING_QUOTA_EXCEEDED.
        3 | 5 | 6 | 7 | 13 | 19 | 20 | 56 | 74 | 75 | 89 => Outcome::Retry,
        // OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID,
        // PRODUCER_FENCED: start over under a new producer id.
        45 | 47 | 59 | 90 => Outcome::NewProducerId,
        _ => Outcome::Refused,
    }
}

/// The sequence number after `count` records: wraps from i32::MAX to 0, as Kafka's does.
fn advance(seq: i32, count: usize) -> i32 {
    ((seq as i64 + count as i64) % (i32::MAX as i64 + 1)) as i32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_wrap_as_kafka_wraps_them() {
        assert_eq!(advance(0, 3), 3);
        assert_eq!(advance(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(advance(i32::MAX, 1), 0);
        assert_eq!(advance(i32::MAX - 1, 5), 3);
    }

    #[test]
    fn produce_errors_are_retried_restarted_or_final() {
        assert_eq!(classify(0), Outcome::Written);
        assert_eq!(classify(46), Outcome::Written);
        assert_eq!(classify(6), Outcome::Retry);
        assert_eq!(classify(7), Outcome::Retry);
        assert_eq!(classify(45), Outcome::NewProducerId);
        assert_eq!(classify(59), Outcome::NewProducerId);
        assert_eq!(classify(10), Outcome::Refused); // MESSAGE_TOO_LARGE
        assert_eq!(classify(29), Outcome::Refused); // TOPIC_AUTHORIZATION_FAILED
    }

    /// A one-broker fake cluster that answers what the own producer asks, with scripted Produce
    /// error codes (one per Produce request, then 0), and records every batch's stamp.
    pub(crate) mod fake {
        use std::sync::{Arc, Mutex};

        use bytes::Bytes;
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        };
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

        use crate::protocol::frame::{write_frame, FrameReader};
        use crate::protocol::header::{join_response, split_request, RequestHeaderView};
        use crate::protocol::records::batches;

        #[derive(Default)]
        pub struct Script {
            /// Produce error codes to answer, in order; 0 once they run out.
            pub errors: Mutex<Vec<i16>>,
            /// (producer id, epoch, base sequence, records) of every batch received.
            pub batches: Mutex<Vec<(i64, i16, i32, i32)>>,
            pub init_calls: Mutex<i64>,
            /// Metadata requests naming `flaky`: its partitions have no leader in the first answer.
            pub flaky_calls: Mutex<u32>,
        }

        pub async fn start(script: Arc<Script>) -> String {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (sock, _) = l.accept().await.unwrap();
                    let script = script.clone();
                    tokio::spawn(async move {
                        let (r, mut w) = sock.into_split();
                        let mut reader = FrameReader::new(r, 1 << 20);
                        while let Ok(Some(frame)) = reader.read_frame().await {
                            let h = RequestHeaderView::peek(&frame).unwrap();
                            let api = h.api().unwrap();
                            let v = h.api_version;
                            let (head, mut body) = split_request(&frame, api, v).unwrap();
                            let mut rh = ResponseHeader::default();
                            rh.correlation_id = head.correlation_id;
                            let out = answer(&script, api, v, &mut body, addr.port(), &rh);
                            write_frame(&mut w, &out).await.unwrap();
                        }
                    });
                }
            });
            addr.to_string()
        }

        fn join<M: Encodable>(rh: &ResponseHeader, api: ApiKey, v: i16, m: &M) -> Bytes {
            join_response(rh, api, v, m).unwrap()
        }

        fn answer(
            s: &Script,
            api: ApiKey,
            v: i16,
            body: &mut Bytes,
            port: u16,
            rh: &ResponseHeader,
        ) -> Bytes {
            match api {
                ApiKey::ApiVersions => {
                    let mut r = ApiVersionsResponse::default();
                    for (k, max) in [
                        (ApiKey::ApiVersions, 3),
                        (ApiKey::Metadata, 12),
                        (ApiKey::InitProducerId, 4),
                        (ApiKey::Produce, 9),
                    ] {
                        let mut a = ApiVersion::default();
                        a.api_key = k as i16;
                        a.max_version = max;
                        r.api_keys.push(a);
                    }
                    join(rh, api, v, &r)
                }
                ApiKey::Metadata => {
                    let req = MetadataRequest::decode(body, v).unwrap();
                    let mut r = MetadataResponse::default();
                    let mut b = MetadataResponseBroker::default();
                    b.node_id = BrokerId(1);
                    b.host = StrBytes::from_static_str("127.0.0.1");
                    b.port = port as i32;
                    r.brokers.push(b);
                    for t in req.topics.unwrap_or_default() {
                        let mut mt = MetadataResponseTopic::default();
                        mt.name = t.name.clone();
                        let name = t.name.as_ref().map(|n| n.0.as_str()).unwrap_or("");
                        let leader = if name == "flaky" {
                            let mut calls = s.flaky_calls.lock().unwrap();
                            *calls += 1;
                            if *calls == 1 {
                                -1
                            } else {
                                1
                            }
                        } else {
                            1
                        };
                        if name == "missing" {
                            mt.error_code = 3;
                        } else {
                            for i in 0..2 {
                                let mut p = MetadataResponsePartition::default();
                                p.partition_index = i;
                                p.leader_id = BrokerId(leader);
                                mt.partitions.push(p);
                            }
                        }
                        r.topics.push(mt);
                    }
                    join(rh, api, v, &r)
                }
                ApiKey::InitProducerId => {
                    let mut calls = s.init_calls.lock().unwrap();
                    *calls += 1;
                    let mut r = InitProducerIdResponse::default();
                    r.producer_id = ProducerId(100 * *calls);
                    join(rh, api, v, &r)
                }
                ApiKey::Produce => {
                    let req = ProduceRequest::decode(body, v).unwrap();
                    let code = {
                        let mut e = s.errors.lock().unwrap();
                        if e.is_empty() {
                            0
                        } else {
                            e.remove(0)
                        }
                    };
                    let mut r = ProduceResponse::default();
                    for t in req.topic_data {
                        let mut tr = TopicProduceResponse::default();
                        tr.name = t.name.clone();
                        for p in t.partition_data {
                            let data = p.records.clone().unwrap_or_default();
                            for b in batches(&data).map(Result::unwrap) {
                                s.batches.lock().unwrap().push((
                                    b.producer_id,
                                    b.producer_epoch,
                                    b.base_sequence,
                                    b.records_count,
                                ));
                            }
                            let mut pr = PartitionProduceResponse::default();
                            pr.index = p.index;
                            pr.error_code = code;
                            pr.base_offset = 42;
                            tr.partition_responses.push(pr);
                        }
                        r.responses.push(tr);
                    }
                    join(rh, api, v, &r)
                }
                other => panic!("the fake does not answer {other:?}"),
            }
        }
    }

    fn records(n: usize) -> Vec<OwnedRecord> {
        (0..n)
            .map(|i| OwnedRecord {
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: None,
                headers: vec![],
                timestamp: 1,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_retried_batch_keeps_its_sequence_numbers_and_the_next_one_follows() {
        let script = std::sync::Arc::new(fake::Script::default());
        *script.errors.lock().unwrap() = vec![6, 7]; // NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT
        let addr = fake::start(script.clone()).await;
        let p = Producer::start(vec![addr], Settings::default(), Duration::from_secs(10));
        let w = p.write("dlq".into(), 3, records(2)).await.unwrap().unwrap();
        assert_eq!(
            w,
            Written {
                partition: 1,
                base_offset: 42
            },
            "partition 3 mod 2"
        );
        p.write("dlq".into(), 3, records(3)).await.unwrap().unwrap();
        let seen = script.batches.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (100, 0, 0, 2),
                (100, 0, 0, 2),
                (100, 0, 0, 2),
                (100, 0, 2, 3)
            ]
        );
        assert_eq!(*script.init_calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_sequence_the_broker_rejects_starts_over_under_a_new_producer_id() {
        let script = std::sync::Arc::new(fake::Script::default());
        let addr = fake::start(script.clone()).await;
        let p = Producer::start(vec![addr], Settings::default(), Duration::from_secs(10));
        p.write("dlq".into(), 0, records(4)).await.unwrap().unwrap();
        *script.errors.lock().unwrap() = vec![45]; // OUT_OF_ORDER_SEQUENCE_NUMBER
        p.write("dlq".into(), 0, records(1)).await.unwrap().unwrap();
        let seen = script.batches.lock().unwrap().clone();
        assert_eq!(seen, vec![(100, 0, 0, 4), (100, 0, 4, 1), (200, 0, 0, 1)]);
        // A topic the cluster does not know is answered at once, a refusal is final.
        assert_eq!(
            p.write("missing".into(), 0, records(1)).await.unwrap(),
            Err(WriteError::UnknownTopic("missing".into()))
        );
        // A partition without a leader is asked about again, and written once it has one.
        p.write("flaky".into(), 1, records(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*script.flaky_calls.lock().unwrap(), 2);
        *script.errors.lock().unwrap() = vec![10]; // MESSAGE_TOO_LARGE
        assert_eq!(
            p.write("dlq".into(), 0, records(1)).await.unwrap(),
            Err(WriteError::Refused {
                topic: "dlq".into(),
                partition: 0,
                code: 10
            })
        );
    }

    #[tokio::test]
    async fn a_write_with_no_reachable_broker_times_out_with_the_last_error() {
        // A port nothing listens on: every attempt fails to connect.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let p = Producer::start(
            vec![addr],
            Settings {
                connect_timeout: Duration::from_millis(200),
                ..Settings::default()
            },
            Duration::from_millis(300),
        );
        let r = OwnedRecord {
            key: None,
            value: Some(bytes::Bytes::from_static(b"x")),
            headers: vec![],
            timestamp: 0,
        };
        let answer = p.write("dlq".into(), 0, vec![r]).await.unwrap();
        match answer {
            Err(WriteError::TimedOut { last, .. }) => assert!(last.contains("connect"), "{last}"),
            other => panic!("{other:?}"),
        }
    }
}
