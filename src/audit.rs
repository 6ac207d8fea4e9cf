//! The audit trail: every governance decision (a refusal, a shadowed would-reject) and every
//! administrative request that passes through, as JSON lines in a file, hash-chained.
//!
//! **The chain.** Each line is one JSON object whose last member is `"hash"`: the SHA-256 (hex)
//! of the line's own text up to that member, closed with `}`. That text holds `"prev"`, the
//! previous line's hash (64 zeros for the first line ever written), and `"seq"`, which counts up
//! by one. Deleting, reordering or editing a line breaks the chain at that line, which
//! `meshgate audit verify` reports. (A chain proves the order and integrity of what is there; it
//! cannot prove that the newest lines were not cut off, so ship the file elsewhere as it grows.)
//! A restarted gateway reads the last whole line of the file and continues its chain (a line torn
//! by a crash is left on a line of its own, for `verify` to name); rotation
//! (`max_bytes`, `keep`) renames the file to `FILE.1`, `FILE.2`, ... and the chain continues
//! into the new file, so the rotated files verify in order, oldest first.
//!
//! **The data path never waits for the disk.** Events go through a bounded queue to one writer
//! thread, which writes them buffered and flushes when the queue is idle. A full queue drops the
//! event and counts it (`meshgate_audit_events_total{outcome="dropped"}`): a gateway that refused
//! to forward while its audit disk stalled would take the platform down with it. Shutdown flushes
//! what was queued.
//!
//! **A Kafka topic as well, or instead** (`audit.topic`): the writer hands each pass's lines to
//! meshgate's own producer (one record per line, value = the line without its newline, all to
//! partition 0 so the topic keeps the chain's order) and counts what the cluster acknowledged
//! (`outcome="topic_written"`) or did not (`"topic_failed"`); it never waits for the cluster but
//! at shutdown (up to the flush timeout). With a file, the chain continues the file's; with a topic
//! only, each start begins a new chain from [`GENESIS`] (read the topic in order and verify it as
//! a file: its lines are the file's lines).
//!
//! Events hold no record data: the reason is the refusal's message (rule, field names, types),
//! and secrets never reach this module.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::own_client::batch::OwnedRecord;
use crate::own_client::producer::{Producer, WriteError, Written};

/// Events queued for the writer at most; past it they are dropped and counted. At the writer's
/// pace of one pass per [`BATCH_WINDOW`], that is 6.5M events a second before a drop.
pub const QUEUE: usize = 65_536;

/// How long the writer sleeps after a pass over the queue.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// The `prev` of the first line ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where and how the trail is written (the gateway config's `audit:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The JSON-lines file, when there is one.
    pub file: Option<PathBuf>,
    /// The Kafka topic, when there is one (written through the own producer).
    pub topic: Option<Arc<str>>,
    /// Rotate when the file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` is the newest).
    pub keep: usize,
}

impl AuditConfig {
    pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
    pub const DEFAULT_KEEP: usize = 10;
}

/// One decision or administrative request.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub principal: Arc<str>,
    pub client_id: String,
    /// The client's address, `IP:port`.
    pub client_addr: Option<String>,
    /// The Kafka API, in snake case.
    pub api: &'static str,
    /// What the request touches: `topic`, `topic-partition`, or a resource name.
    pub resource: String,
    /// `rejected`, `would_reject` or `forwarded`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For a would-reject: `shadow` or `canary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policy generation in force, and the content hash of its files.
    pub generation: u64,
    pub policy_hash: Arc<str>,
}

enum Message {
    Event(Box<AuditEvent>),
    /// Flush, then answer.
    Flush(SyncSender<()>),
}

/// Counters the writer keeps: events written, dropped at the queue, and failed writes.
#[derive(Debug, Clone)]
pub struct AuditCounters {
    pub written: prometheus::IntCounter,
    pub dropped: prometheus::IntCounter,
    pub failed: prometheus::IntCounter,
    /// Lines the audit topic's partition acknowledged, and lines it did not take.
    pub topic_written: prometheus::IntCounter,
    pub topic_failed: prometheus::IntCounter,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Message>,
    counters: AuditCounters,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// Why the trail cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit writer thread: {source}")]
    Thread { source: std::io::Error },
}

impl AuditLog {
    /// Opens (or creates) the file, continues the chain found in it, and starts the writer.
    /// `producer` writes the lines to `config.topic`, when one is set.
    pub fn start(
        config: AuditConfig,
        counters: AuditCounters,
        producer: Option<Producer>,
    ) -> Result<AuditLog, AuditError> {
        let (mut seq, mut prev, mut out, mut size) = (0, GENESIS.to_string(), None, 0);
        if let Some(path) = &config.file {
            let io = |source| AuditError::Io {
                path: path.clone(),
                source,
            };
            (seq, prev) = last_link(path).map_err(io)?;
            let mut file = open_append(path).map_err(io)?;
            // A line torn by a crash stays on its own line (verify reports it); the chain goes
            // on from the last whole one.
            if !ends_with_newline(path).map_err(io)? {
                file.write_all(b"\n").map_err(io)?;
            }
            size = file.metadata().map_err(io)?.len();
            out = Some(BufWriter::with_capacity(256 * 1024, file));
        }
        let sink = match (&config.topic, producer) {
            (Some(topic), Some(producer)) => Some(TopicSink {
                producer,
                topic: topic.clone(),
                pending: Vec::new(),
                inflight: std::collections::VecDeque::new(),
            }),
            _ => None,
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer = Writer {
            out,
            sink,
            size,
            seq,
            prev,
            config,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("meshgate-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Thread { source })?;
        Ok(AuditLog { tx, counters })
    }

    /// Queues an event; a full queue drops it (counted).
    pub fn record(&self, event: AuditEvent) {
        match self.tx.try_send(Message::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.inc()
            }
        }
    }

    /// Waits until everything queued so far is written and flushed (at most `timeout`).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Message::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Writer {
    out: Option<BufWriter<File>>,
    sink: Option<TopicSink>,
    size: u64,
    seq: u64,
    prev: String,
    config: AuditConfig,
    counters: AuditCounters,
}

impl Writer {
    /// Waits for an event, then writes everything queued, flushes, and sleeps for
    /// [`BATCH_WINDOW`] before looking again. While it sleeps, a sender's `try_send` wakes no
    /// thread: under load the writer wakes once per window, not once per event (waking it per
    /// event cost the data path's core more than the writing itself).
    fn run(mut self, rx: Receiver<Message>) {
        let mut acks = Vec::new();
        loop {
            let first = match rx.recv() {
                Ok(m) => m,
                Err(_) => {
                    self.flush();
                    return;
                }
            };
            let mut next = Some(first);
            while let Some(m) = next {
                match m {
                    Message::Event(e) => self.write(&e),
                    Message::Flush(ack) => acks.push(ack),
                }
                next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        acks.drain(..).for_each(|a| {
                            let _ = a.send(());
                        });
                        return;
                    }
                };
            }
            self.flush();
            if !acks.is_empty() {
                if let Some(sink) = &mut self.sink {
                    sink.settle(&self.counters, Some(Instant::now() + FLUSH_WAIT));
                }
            }
            acks.drain(..).for_each(|a| {
                let _ = a.send(());
            });
            std::thread::sleep(BATCH_WINDOW);
        }
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            if let Err(e) = out.flush() {
                self.counters.failed.inc();
                tracing::error!(error = %e, file = ?self.config.file, "audit trail flush failed");
            }
        }
        if let Some(sink) = &mut self.sink {
            sink.send();
            sink.settle(&self.counters, None);
        }
    }

    fn write(&mut self, event: &AuditEvent) {
        let line = chain_line(self.seq + 1, &self.prev, event);
        if let Some(out) = &mut self.out {
            if let Err(e) = out.write_all(line.text.as_bytes()) {
                self.counters.failed.inc();
                tracing::error!(error = %e, file = ?self.config.file, "audit trail write failed");
                if self.sink.is_none() {
                    return;
                }
            } else {
                self.size += line.text.len() as u64;
                self.counters.written.inc();
            }
        }
        if let Some(sink) = &mut self.sink {
            let text = line.text.trim_end_matches('\n');
            sink.pending.push(OwnedRecord {
                key: None,
                value: Some(bytes::Bytes::copy_from_slice(text.as_bytes())),
                headers: Vec::new(),
                timestamp: event.time_ms as i64,
            });
        }
        self.seq += 1;
        self.prev = line.hash;
        if self.out.is_some() && self.size >= self.config.max_bytes {
            if let Err(e) = self.rotate() {
                self.counters.failed.inc();
                tracing::error!(error = %e, file = ?self.config.file, "audit trail rotation failed");
            }
        }
    }

    /// FILE → FILE.1 → FILE.2 ... (the oldest past `keep` is removed), then a new FILE.
    fn rotate(&mut self) -> std::io::Result<()> {
        let (Some(out), Some(path)) = (&mut self.out, &self.config.file) else {
            return Ok(());
        };
        out.flush()?;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        let _ = std::fs::remove_file(numbered(self.config.keep.max(1)));
        for n in (1..self.config.keep.max(1)).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        std::fs::rename(path, numbered(1))?;
        self.out = Some(BufWriter::with_capacity(256 * 1024, open_append(path)?));
        self.size = 0;
        Ok(())
    }
}

/// How long a flush (shutdown) waits for the audit topic's acknowledgements.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// Writes to the audit topic awaiting an answer at most; past it, a pass's lines are counted as
/// failed instead of queued behind a cluster that does not answer.
const MAX_TOPIC_INFLIGHT: usize = 256;

type Answer = tokio::sync::oneshot::Receiver<Result<Written, WriteError>>;

/// The audit topic: the lines of the current pass, and the writes awaiting an answer (in order).
struct TopicSink {
    producer: Producer,
    topic: Arc<str>,
    pending: Vec<OwnedRecord>,
    inflight: std::collections::VecDeque<(u64, Answer)>,
}

impl TopicSink {
    /// Hands the pass's lines to the own producer, as one write.
    fn send(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.pending);
        let n = records.len() as u64;
        if self.inflight.len() >= MAX_TOPIC_INFLIGHT {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Err(WriteError::Busy));
            self.inflight.push_back((n, rx));
            return;
        }
        let answer = self.producer.write(self.topic.clone(), 0, records);
        self.inflight.push_back((n, answer));
    }

    /// Counts the answered writes, oldest first; with a deadline, waits for all of them until it.
    fn settle(&mut self, counters: &AuditCounters, until: Option<Instant>) {
        while let Some((n, answer)) = self.inflight.front_mut() {
            let result = match answer.try_recv() {
                Ok(r) => r,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Err(WriteError::Stopped),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => match until {
                    Some(t) if Instant::now() < t => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    _ => return,
                },
            };
            let n = *n;
            self.inflight.pop_front();
            match result {
                Ok(_) => counters.topic_written.inc_by(n),
                Err(e) => {
                    counters.topic_failed.inc_by(n);
                    if let Some(suppressed) = crate::log_budget::allowed() {
                        tracing::warn!(topic = %self.topic, lines = n, error = %e, suppressed_since_last = suppressed, "audit lines not written to the audit topic");
                    }
                }
            }
        }
    }
}

/// A written line and its hash.
pub struct ChainLine {
    pub text: String,
    pub hash: String,
}

/// The line for `event` at `seq` after `prev`: its JSON up to the hash, then the hash of that.
pub fn chain_line(seq: u64, prev: &str, event: &AuditEvent) -> ChainLine {
    use std::fmt::Write as _;
    // `{"seq":N,"prev":"…",` then the event's own members: no `serde(flatten)`, whose map
    // detour cost more than the rest of the line.
    let event = serde_json::to_string(event).expect("an audit event always serializes");
    let mut text = String::with_capacity(event.len() + 160);
    let _ = write!(text, "{{\"seq\":{seq},\"prev\":\"{prev}\",");
    text.push_str(&event[1..]);
    let hash = sha256_hex(text.as_bytes());
    // The text ends with `}`: the hash goes in as the last member.
    text.pop();
    let _ = writeln!(text, ",\"hash\":\"{hash}\"}}");
    ChainLine { text, hash }
}

fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    // A table, not `write!` per byte: formatting 32 bytes one by one cost a third of a line.
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Whether the file is empty or ends with a newline.
fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// The (seq, hash) of the file's last whole line, to continue from; (0, genesis) for a new file.
fn last_link(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(e) => return Err(e),
    };
    // The last line is within the last 64 KiB unless a reason was huge; read back far enough.
    let len = file.metadata()?.len();
    let mut from = len.saturating_sub(64 * 1024);
    loop {
        file.seek(SeekFrom::Start(from))?;
        // The last line that parses: a torn last line (a crash mid-write) is passed over, and
        // so is a window's first line when it starts mid-line.
        let mut last = None;
        for line in BufReader::new(&mut file).lines() {
            if let Some(link) = parse_link(&line?) {
                last = Some(link);
            }
        }
        match last {
            Some(link) => return Ok(link),
            None if from > 0 => from = from.saturating_sub(1024 * 1024),
            None => return Ok((0, GENESIS.into())),
        }
    }
}

/// (seq, hash) of one well-formed line.
fn parse_link(line: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((
        v.get("seq")?.as_u64()?,
        v.get("hash")?.as_str()?.to_string(),
    ))
}

/// What `audit verify` found in a chain that holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub lines: u64,
    pub first_seq: Option<u64>,
    /// The `prev` of the first line: the genesis, or the last hash of the file before it.
    pub first_prev: Option<String>,
    pub last_hash: Option<String>,
}

/// Where a chain breaks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("{file}:{line}: {what}")]
    Broken {
        file: String,
        line: u64,
        what: String,
    },
    #[error("{file}: {error}")]
    Io { file: String, error: String },
}

/// Checks the chain through `files`, in order (rotated files oldest first, then the current
/// one): each line's hash, and each line's link to the one before it.
pub fn verify(files: &[PathBuf]) -> Result<Verified, VerifyError> {
    let mut out = Verified {
        lines: 0,
        first_seq: None,
        first_prev: None,
        last_hash: None,
    };
    let mut expected: Option<(u64, String)> = None;
    for path in files {
        let file_name = path.display().to_string();
        let io = |e: std::io::Error| VerifyError::Io {
            file: file_name.clone(),
            error: e.to_string(),
        };
        let reader = BufReader::new(File::open(path).map_err(io)?);
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(io)?;
            let at = n as u64 + 1;
            let broken = |what: String| VerifyError::Broken {
                file: file_name.clone(),
                line: at,
                what,
            };
            let (seq, prev, hash) = check_line(&line).map_err(|e| broken(e.to_string()))?;
            match &expected {
                None => {
                    out.first_seq = Some(seq);
                    out.first_prev = Some(prev.clone());
                }
                Some((want_seq, want_prev)) => {
                    if prev != *want_prev {
                        return Err(broken(format!(
                            "`prev` does not match the hash of the line before it: a line was removed, reordered or altered (seq {seq})"
                        )));
                    }
                    if seq != *want_seq {
                        return Err(broken(format!("seq {seq} follows seq {}", want_seq - 1)));
                    }
                }
            }
            out.lines += 1;
            out.last_hash = Some(hash.clone());
            expected = Some((seq + 1, hash));
        }
    }
    Ok(out)
}

/// Why one line is not a sound link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not an audit line (no trailing hash)")]
    NoHash,
    #[error("the line's hash does not match its content: it was altered")]
    Altered,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no `{0}`")]
    Missing(&'static str),
}

/// (seq, prev, hash) of a line whose hash is right.
fn check_line(line: &str) -> Result<(u64, String, String), LineError> {
    const TAIL: usize = ",\"hash\":\"\"}".len() + 64;
    if line.len() < TAIL || !line.ends_with("\"}") {
        return Err(LineError::NoHash);
    }
    let (body, tail) = line.split_at(line.len() - TAIL);
    let hash = tail
        .strip_prefix(",\"hash\":\"")
        .and_then(|t| t.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(LineError::NoHash)?;
    let recomputed = sha256_hex(format!("{body}}}").as_bytes());
    if recomputed != hash {
        return Err(LineError::Altered);
    }
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| LineError::NotJson(e.to_string()))?;
    let seq = v
        .get("seq")
        .and_then(|s| s.as_u64())
        .ok_or(LineError::Missing("seq"))?;
    let prev = v
        .get("prev")
        .and_then(|p| p.as_str())
        .ok_or(LineError::Missing("prev"))?
        .to_string();
    Ok((seq, prev, hash.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> AuditCounters {
        AuditCounters {
            written: prometheus::IntCounter::new("w", "w").unwrap(),
            dropped: prometheus::IntCounter::new("d", "d").unwrap(),
            failed: prometheus::IntCounter::new("f", "f").unwrap(),
            topic_written: prometheus::IntCounter::new("tw", "tw").unwrap(),
            topic_failed: prometheus::IntCounter::new("tf", "tf").unwrap(),
        }
    }

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            time_ms: 1_700_000_000_000 + i,
            principal: "User:alice".into(),
            client_id: "c".into(),
            client_addr: Some("127.0.0.1:5000".into()),
            api: "produce",
            resource: format!("shop.orders.v1-{i}"),
            decision: "rejected",
            policy: Some("contract"),
            rule: Some("total > 0".into()),
            mode: None,
            reason: Some("breaks contract `orders` rule `total > 0`".into()),
            generation: 3,
            policy_hash: "abc".into(),
        }
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "meshgate-audit-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_written_chain_verifies_and_continues_after_a_restart() {
        let d = dir();
        let config = AuditConfig {
            file: Some(d.join("audit.jsonl")),
            topic: None,
            max_bytes: AuditConfig::DEFAULT_MAX_BYTES,
            keep: 3,
        };
        let c = counters();
        let log = AuditLog::start(config.clone(), c.clone(), None).unwrap();
        (0..5).for_each(|i| log.record(event(i)));
        assert!(log.flush(Duration::from_secs(5)));
        drop(log);
        // A restart continues the chain from the file's last line.
        let log = AuditLog::start(config.clone(), c.clone(), None).unwrap();
        (5..8).for_each(|i| log.record(event(i)));
        assert!(log.flush(Duration::from_secs(5)));
        let v = verify(std::slice::from_ref(config.file.as_ref().unwrap())).unwrap();
        assert_eq!(v.lines, 8);
        assert_eq!(v.first_seq, Some(1));
        assert_eq!(v.first_prev.as_deref(), Some(GENESIS));
        assert_eq!(c.written.get(), 8);
        let text = std::fs::read_to_string(config.file.as_ref().unwrap()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["decision"], "rejected");
        assert_eq!(first["rule"], "total > 0");
        assert_eq!(first["generation"], 3);
    }

    #[test]
    fn a_torn_last_line_is_left_as_it_is_and_the_chain_goes_on_from_the_last_whole_one() {
        let d = dir();
        let config = AuditConfig {
            file: Some(d.join("torn.jsonl")),
            topic: None,
            max_bytes: AuditConfig::DEFAULT_MAX_BYTES,
            keep: 1,
        };
        let log = AuditLog::start(config.clone(), counters(), None).unwrap();
        (0..3).for_each(|i| log.record(event(i)));
        assert!(log.flush(Duration::from_secs(5)));
        drop(log);
        // A crash in the middle of the fourth line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(config.file.as_ref().unwrap())
            .unwrap();
        f.write_all(br#"{"seq":4,"prev":"ab"#).unwrap();
        drop(f);
        let log = AuditLog::start(config.clone(), counters(), None).unwrap();
        log.record(event(9));
        assert!(log.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(config.file.as_ref().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "the torn line keeps a line of its own");
        let last: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
        assert_eq!(last["seq"], 4, "the chain continues from seq 3");
        // verify names the torn line, and nothing before it.
        let e = verify(std::slice::from_ref(config.file.as_ref().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("torn.jsonl:4: not an audit line"), "{e}");
    }

    #[test]
    fn an_edited_removed_or_swapped_line_breaks_the_chain_where_it_happened() {
        let d = dir();
        let file = d.join("a.jsonl");
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for i in 0..4 {
            let l = chain_line(i + 1, &prev, &event(i));
            prev = l.hash;
            lines.push(l.text);
        }
        let write = |ls: &[String]| std::fs::write(&file, ls.concat()).unwrap();
        let check = || verify(std::slice::from_ref(&file));
        write(&lines);
        assert_eq!(check().unwrap().lines, 4);

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("User:alice", "User:mallory");
        write(&edited);
        let e = check().unwrap_err().to_string();
        assert!(
            e.ends_with("a.jsonl:3: the line's hash does not match its content: it was altered"),
            "{e}"
        );

        let mut removed = lines.clone();
        removed.remove(1);
        write(&removed);
        let e = check().unwrap_err().to_string();
        assert!(e.contains("a.jsonl:2: `prev` does not match"), "{e}");

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        write(&swapped);
        assert!(check().unwrap_err().to_string().contains("a.jsonl:2:"));

        // Re-hashing an edited line does not help: the next line's `prev` no longer matches.
        let mut forged = lines.clone();
        let e2 = event(1);
        let mut fake = e2.clone();
        fake.principal = "User:mallory".into();
        forged[1] = chain_line(2, &chain_hash(&lines[0]), &fake).text;
        write(&forged);
        assert!(check()
            .unwrap_err()
            .to_string()
            .contains("a.jsonl:3: `prev` does not match"));
    }

    fn chain_hash(line: &str) -> String {
        check_line(line.trim_end()).unwrap().2
    }

    #[test]
    fn rotation_keeps_the_chain_across_files_and_drops_the_oldest() {
        let d = dir();
        let config = AuditConfig {
            file: Some(d.join("r.jsonl")),
            topic: None,
            max_bytes: 1_000,
            keep: 2,
        };
        let log = AuditLog::start(config.clone(), counters(), None).unwrap();
        (0..20).for_each(|i| log.record(event(i)));
        assert!(log.flush(Duration::from_secs(5)));
        let numbered =
            |n: usize| PathBuf::from(format!("{}.{n}", config.file.as_ref().unwrap().display()));
        assert!(numbered(1).exists() && numbered(2).exists());
        assert!(!numbered(3).exists(), "keep: 2");
        let v = verify(&[numbered(2), numbered(1), config.file.clone().unwrap()]).unwrap();
        assert!(v.lines > 2 && v.lines < 20, "{v:?}");
        assert_ne!(
            v.first_prev.as_deref(),
            Some(GENESIS),
            "the oldest file was dropped"
        );
        // Out of order, the link between files breaks.
        assert!(verify(&[numbered(1), numbered(2)]).is_err());
    }

    #[test]
    fn lines_the_audit_topic_does_not_take_are_counted_failed_and_the_file_still_gets_them() {
        // An upstream nothing listens on: every write to the topic fails (fast).
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let producer = Producer::start(
            vec![addr],
            crate::own_client::Settings {
                connect_timeout: Duration::from_millis(100),
                ..Default::default()
            },
            Duration::from_millis(200),
        );
        let d = dir();
        let config = AuditConfig {
            file: Some(d.join("both.jsonl")),
            topic: Some(Arc::from("audit")),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let c = counters();
        let log = AuditLog::start(config.clone(), c.clone(), Some(producer)).unwrap();
        for i in 0..3 {
            log.record(event(i));
        }
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(
            (c.written.get(), c.topic_written.get(), c.topic_failed.get()),
            (3, 0, 3)
        );
        let v = verify(std::slice::from_ref(config.file.as_ref().unwrap())).unwrap();
        assert_eq!(v.lines, 3);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let c = counters();
        let log = AuditLog {
            tx,
            counters: c.clone(),
        };
        (0..3).for_each(|i| log.record(event(i)));
        assert_eq!(c.dropped.get(), 2);
    }
}
