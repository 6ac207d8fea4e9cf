//! The dead-letter spool (`own_client.spool` of the gateway config): refused records made
//! durable on meshgate's own disk before their producer is answered, then written to their
//! dead-letter topic in the background through the own [`Producer`].
//!
//! **Why.** Without it a refused partition is answered only once the own producer's acks=all
//! write is done: one broker round trip added to every refused batch. librdkafka's idempotent
//! producer drains and bumps its epoch after each refused batch, so with many refused batches
//! those round trips are serial and cost it a third of its throughput (README, "Dead letters").
//! An append to a local file costs microseconds.
//!
//! **What it promises.** A letter is answered as written once its frame is in the spool file
//! (`write(2)` returned; with `fsync: true`, once `fdatasync` did too). From then on it is
//! written to its topic, retried with backoff for as long as it takes, across restarts of
//! meshgate and of the cluster: nothing is dropped. Without `fsync`, a crash of the *machine*
//! (not of meshgate) can lose the letters of the last few seconds, as a Kafka broker without
//! `flush.messages` can; `fsync: true` closes that at the price of a disk flush per append
//! round. A letter can reach its topic twice (at least once): after a crash between the write
//! and the spool's note of it, or after a write timed out with an unknown outcome.
//!
//! **Bound.** At most `max_bytes` of frames wait for delivery. Past it (the topic is missing,
//! the cluster is down), a letter is refused with [`WriteError::SpoolFull`] and its producer gets
//! a retriable error, as a failed direct write does.
//!
//! **On disk.** `dir/NNNNNNNNNNNNNNNNNNNN.spool` segments of frames, appended in order and rolled
//! at [`SEGMENT_BYTES`]; `dir/delivered` names the segment and offset up to which every frame
//! is written (rewritten by rename); `dir/lock` keeps a second meshgate out of the directory.
//! A frame is `length u32 | crc32c u32 | payload`, the payload `contract topic | dead-letter
//! topic | partition hint | one record batch` (the own producer's encoding, so repeated headers
//! survive). A torn frame at a segment's end (a crash mid-append) is cut off at start-up; it was
//! never answered as written.
//!
//! **Threads.** An append is a `write(2)` on the caller's task under the spool's mutex (to the
//! page cache: microseconds; handing it to a thread of its own cost two context switches per
//! letter, more than the write), and `fdatasync` on the blocking pool when `fsync` is set.
//! Deliveries go through one task on the runtime, which
//! waits [`LINGER`] after a letter reaches an idle spool so that one write carries the letters
//! of a burst, and notes its progress on the blocking pool.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use super::batch::{encode, OwnedRecord, Stamp};
use super::producer::{Producer, WriteError};
use crate::protocol::records::batches;

/// A segment is rolled once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Letters handed to the producer at once by the delivery task.
const DELIVER_AT_ONCE: usize = 256;
const MARKER: &str = "delivered";
/// How long the delivery task waits after a letter arrives to an idle spool, gathering more.
const LINGER: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `own_client.spool` of the gateway config, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes of frames that may wait for delivery.
    pub max_bytes: u64,
    /// `fdatasync` after every append round.
    pub fsync: bool,
}

/// Where a letter was spooled: its segment and the offset just past its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spooled {
    pub segment: u64,
    pub offset: u64,
}

/// The spool's metrics: bytes waiting, and letters' records written from it by contract topic.
#[derive(Clone)]
pub struct SpoolCounters {
    pub waiting_bytes: prometheus::IntGauge,
    /// `meshgate_dead_letter_records_total{topic, outcome}`: `written` when delivered.
    pub records: prometheus::IntCounterVec,
}

/// Why the spool cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("dead-letter spool {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dead-letter spool {}: another meshgate holds it", path.display())]
    Locked { path: PathBuf },
}

/// The appending side: cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Appender>,
}

/// The current segment, appended to under the spool's lock.
struct Appender {
    dir: PathBuf,
    fsync: bool,
    max_bytes: u64,
    /// Frame bytes appended and not yet delivered: `meshgate_dead_letter_spool_bytes`, added to
    /// by each append (under the lock, after the bound is checked) and taken from by the
    /// delivery task as it notes letters written (atomic adds, so it never shows less than
    /// waits).
    waiting: prometheus::IntGauge,
    current: Mutex<Current>,
    /// Held (locked) for as long as a handle lives.
    _lock: File,
}

struct Current {
    file: Arc<File>,
    segment: u64,
    size: u64,
    /// The delivery task's queue; sent to under the lock, so its order is the file's.
    entries: tokio::sync::mpsc::UnboundedSender<Entry>,
}

/// A spooled letter on its way to its topic.
struct Entry {
    at: Spooled,
    frame_bytes: u64,
    letter: Letter,
    done: bool,
}

impl Spool {
    /// Opens (or creates) the spool directory, takes its lock, reads back the letters a previous
    /// run left undelivered, and starts the delivery task (on the current runtime).
    pub fn open(
        config: SpoolConfig,
        producer: Producer,
        counters: SpoolCounters,
    ) -> Result<Spool, SpoolError> {
        let dir = config.dir.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: dir }),
            Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let recovered = recover(&dir).map_err(io(&dir))?;
        let waiting: u64 = recovered.entries.iter().map(|e| e.frame_bytes).sum();
        counters.waiting_bytes.set(waiting as i64);
        if !recovered.entries.is_empty() {
            tracing::info!(dir = %dir.display(), letters = recovered.entries.len(), bytes = waiting, "dead-letter spool: delivering what a previous run left");
        }
        let segment = recovered.next_segment;
        let path = segment_path(&dir, segment);
        let file = open_segment(&path).map_err(io(&path))?;
        let (entries_tx, entries_rx) = tokio::sync::mpsc::unbounded_channel();
        let appender = Appender {
            dir: dir.clone(),
            fsync: config.fsync,
            max_bytes: config.max_bytes,
            waiting: counters.waiting_bytes.clone(),
            current: Mutex::new(Current {
                file: Arc::new(file),
                segment,
                size: 0,
                entries: entries_tx,
            }),
            _lock: lock,
        };
        let delivery = Delivery {
            dir,
            fsync: config.fsync,
            producer,
            counters,
            queue: recovered.entries.into(),
        };
        tokio::spawn(delivery.run(entries_rx));
        Ok(Spool {
            inner: Arc::new(appender),
        })
    }

    /// Spools `records` for `topic`: appends their frame to the current segment (a `write(2)`
    /// on the caller's thread: page cache, microseconds); the answer is ready at once, or, with
    /// `fsync`, once `fdatasync` on the blocking pool returns.
    pub fn write(
        &self,
        contract_topic: Arc<str>,
        topic: Arc<str>,
        hint: i32,
        records: Vec<OwnedRecord>,
    ) -> oneshot::Receiver<Result<Spooled, WriteError>> {
        let (reply, answer) = oneshot::channel();
        let letter = Letter {
            contract_topic,
            topic,
            hint,
            records,
        };
        match self.inner.append(letter) {
            Ok((at, file)) if self.inner.fsync => {
                drop(tokio::task::spawn_blocking(move || {
                    let synced = file
                        .sync_data()
                        .map(|()| at)
                        .map_err(|e| WriteError::Spool(e.to_string()));
                    let _ = reply.send(synced);
                }));
            }
            result => {
                let _ = reply.send(result.map(|(at, _)| at));
            }
        }
        answer
    }
}

impl Appender {
    /// Appends the letter's frame and hands the letter to the delivery task; (where, the file
    /// to sync).
    fn append(&self, letter: Letter) -> Result<(Spooled, Arc<File>), WriteError> {
        let frame = encode_frame(
            &letter.contract_topic,
            &letter.topic,
            letter.hint,
            &letter.records,
        );
        let len = frame.len() as u64;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = self.waiting.get().max(0) as u64;
        if waiting.saturating_add(len) > self.max_bytes {
            return Err(WriteError::SpoolFull {
                waiting,
                max: self.max_bytes,
            });
        }
        if current.size > 0 && current.size + len > SEGMENT_BYTES {
            current
                .roll(&self.dir)
                .map_err(|e| WriteError::Spool(e.to_string()))?;
        }
        if let Err(e) = (&*current.file).write_all(&frame) {
            if let Some(suppressed) = crate::log_budget::allowed() {
                tracing::error!(segment = current.segment, error = %e, suppressed_since_last = suppressed, "dead-letter spool: append failed; the letter is refused with a retriable error");
            }
            // Nothing half-written may stay: cut back to the last whole frame, or go on in a
            // new segment when even that fails.
            if current.file.set_len(current.size).is_err() {
                let _ = current.roll(&self.dir);
            }
            return Err(WriteError::Spool(e.to_string()));
        }
        current.size += len;
        self.waiting.add(len as i64);
        let at = Spooled {
            segment: current.segment,
            offset: current.size,
        };
        // The delivery task ends only once every handle is gone, so this send cannot fail
        // while `self` lives.
        let _ = current.entries.send(Entry {
            at,
            frame_bytes: len,
            letter,
            done: false,
        });
        Ok((at, current.file.clone()))
    }
}

impl Current {
    /// Goes on in the next segment.
    fn roll(&mut self, dir: &Path) -> std::io::Result<()> {
        let next = self.segment + 1;
        self.file = Arc::new(open_segment(&segment_path(dir, next))?);
        self.segment = next;
        self.size = 0;
        Ok(())
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.spool"))
}

fn open_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The segments in `dir`, by number.
fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".spool")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `dir/delivered`: every frame before (segment, offset) is written. Missing: nothing is.
fn read_marker(dir: &Path) -> std::io::Result<Spooled> {
    let mut text = String::new();
    match File::open(dir.join(MARKER)) {
        Ok(mut f) => f.read_to_string(&mut text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Spooled {
                segment: 0,
                offset: 0,
            })
        }
        Err(e) => return Err(e),
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Ok(Spooled { segment, offset }),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{MARKER}: not `segment offset`: {text:?}"),
        )),
    }
}

fn write_marker(dir: &Path, at: Spooled, fsync: bool) -> std::io::Result<()> {
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let mut f = File::create(&tmp)?;
    writeln!(f, "{} {}", at.segment, at.offset)?;
    if fsync {
        f.sync_data()?;
    }
    fs::rename(tmp, dir.join(MARKER))
}

struct Recovered {
    entries: Vec<Entry>,
    next_segment: u64,
}

/// Reads back every frame after the marker; cuts a torn tail off; removes delivered segments.
fn recover(dir: &Path) -> std::io::Result<Recovered> {
    let marker = read_marker(dir)?;
    let all = segments(dir)?;
    let mut entries = Vec::new();
    for &segment in &all {
        let path = segment_path(dir, segment);
        if segment < marker.segment {
            fs::remove_file(&path)?;
            continue;
        }
        let data = fs::read(&path)?;
        let start = if segment == marker.segment {
            marker.offset as usize
        } else {
            0
        };
        let (frames, whole) = read_frames(&data, start);
        for (end, frame_bytes, letter) in frames {
            entries.push(Entry {
                at: Spooled {
                    segment,
                    offset: end as u64,
                },
                frame_bytes: frame_bytes as u64,
                letter,
                done: false,
            });
        }
        if whole < data.len() {
            tracing::warn!(segment = %path.display(), offset = whole, cut = data.len() - whole, "dead-letter spool: a torn frame (an append cut short by a crash, never answered) is cut off");
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(whole as u64)?;
        }
    }
    Ok(Recovered {
        entries,
        next_segment: all.last().map_or(1, |s| s + 1),
    })
}

/// A frame's payload, decoded.
#[derive(Debug, PartialEq)]
struct Letter {
    contract_topic: Arc<str>,
    topic: Arc<str>,
    hint: i32,
    records: Vec<OwnedRecord>,
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len().min(u16::MAX as usize) as u16);
    buf.put_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
}

/// One frame: `length | crc32c(payload) | payload`.
fn encode_frame(contract_topic: &str, topic: &str, hint: i32, records: &[OwnedRecord]) -> Bytes {
    let batch = encode(
        records,
        Stamp {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        },
    );
    let mut payload = BytesMut::with_capacity(8 + contract_topic.len() + topic.len() + batch.len());
    put_str(&mut payload, contract_topic);
    put_str(&mut payload, topic);
    payload.put_i32(hint);
    payload.put_slice(&batch);
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u32(payload.len() as u32);
    frame.put_u32(crc32c::crc32c(&payload));
    frame.put_slice(&payload);
    frame.freeze()
}

fn get_str(buf: &mut &[u8]) -> Option<Arc<str>> {
    if buf.len() < 2 {
        return None;
    }
    let n = buf.get_u16() as usize;
    if buf.len() < n {
        return None;
    }
    let s = std::str::from_utf8(&buf[..n]).ok()?;
    buf.advance(n);
    Some(Arc::from(s))
}

fn decode_payload(mut p: &[u8]) -> Option<Letter> {
    let contract_topic = get_str(&mut p)?;
    let topic = get_str(&mut p)?;
    if p.len() < 4 {
        return None;
    }
    let hint = p.get_i32();
    let mut records = Vec::new();
    for batch in batches(p) {
        let batch = batch.ok()?;
        let inflated = batch.inflate(usize::MAX).ok()?;
        for r in inflated.iter() {
            let r = r.ok()?;
            records.push(OwnedRecord::from_view(
                &r,
                batch.base_timestamp,
                Bytes::copy_from_slice,
            ));
        }
    }
    Some(Letter {
        contract_topic,
        topic,
        hint,
        records,
    })
}

/// The whole frames of `data` from `start`: (offset past the frame, frame bytes, letter), and
/// the offset where whole frames end (`data.len()` unless the tail is torn or damaged).
fn read_frames(data: &[u8], start: usize) -> (Vec<(usize, usize, Letter)>, usize) {
    let mut out = Vec::new();
    let mut at = start.min(data.len());
    while data.len() - at >= 8 {
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let crc = u32::from_be_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(letter) = decode_payload(payload) else {
            break;
        };
        at += 8 + len;
        out.push((at, 8 + len, letter));
    }
    (out, at)
}

struct Delivery {
    dir: PathBuf,
    fsync: bool,
    producer: Producer,
    counters: SpoolCounters,
    queue: VecDeque<Entry>,
}

impl Delivery {
    async fn run(mut self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Entry>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.queue.is_empty() {
                match rx.recv().await {
                    Some(e) => self.queue.push_back(e),
                    None => return,
                }
                // The letters are safe on disk: a short wait lets one write carry every letter
                // refused meanwhile, rather than one broker request (and note) per letter.
                tokio::time::sleep(LINGER).await;
            }
            while let Ok(e) = rx.try_recv() {
                self.queue.push_back(e);
            }
            let failed = self.deliver_some().await;
            if let Err(e) = self.note_delivered().await {
                if let Some(suppressed) = crate::log_budget::allowed() {
                    tracing::error!(dir = %self.dir.display(), error = %e, suppressed_since_last = suppressed, "dead-letter spool: cannot note what was delivered; those letters may be written again after a restart");
                }
            }
            if let Some(e) = failed {
                if let Some(suppressed) = crate::log_budget::allowed() {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, waiting_bytes = self.counters.waiting_bytes.get(), suppressed_since_last = suppressed, "dead-letter spool: a write to a dead-letter topic failed; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            } else {
                backoff = BACKOFF_MIN;
            }
        }
    }

    /// Hands up to [`DELIVER_AT_ONCE`] undelivered letters to the producer and waits for them;
    /// returns the first failure.
    async fn deliver_some(&mut self) -> Option<WriteError> {
        let mut sent = Vec::new();
        for (i, e) in self.queue.iter().enumerate().filter(|(_, e)| !e.done) {
            if sent.len() == DELIVER_AT_ONCE {
                break;
            }
            let answer = self.producer.write(
                e.letter.topic.clone(),
                e.letter.hint,
                e.letter.records.clone(),
            );
            sent.push((i, answer));
        }
        let mut failed = None;
        for (i, answer) in sent {
            match answer.await.unwrap_or(Err(WriteError::Stopped)) {
                Ok(_) => {
                    let e = &mut self.queue[i];
                    e.done = true;
                    self.counters
                        .records
                        .with_label_values(&[&*e.letter.contract_topic, "written"])
                        .inc_by(e.letter.records.len() as u64);
                }
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        failed
    }

    /// Drops the delivered letters at the queue's head, notes how far delivery got, and removes
    /// the segments wholly behind it.
    async fn note_delivered(&mut self) -> std::io::Result<()> {
        let mut last = None;
        while self.queue.front().is_some_and(|e| e.done) {
            let Some(e) = self.queue.pop_front() else {
                break;
            };
            self.counters.waiting_bytes.sub(e.frame_bytes as i64);
            last = Some(e.at);
        }
        let Some(at) = last else { return Ok(()) };
        let (dir, fsync) = (self.dir.clone(), self.fsync);
        // File system calls, off the runtime's threads.
        tokio::task::spawn_blocking(move || {
            write_marker(&dir, at, fsync)?;
            for segment in segments(&dir)? {
                if segment >= at.segment {
                    break;
                }
                fs::remove_file(segment_path(&dir, segment))?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> OwnedRecord {
        OwnedRecord {
            key: Some(Bytes::from(format!("k{i}"))),
            value: if i.is_multiple_of(3) {
                None
            } else {
                Some(Bytes::from(format!("value {i}")))
            },
            headers: vec![
                (Bytes::from_static(b"h"), Some(Bytes::from_static(b"1"))),
                (Bytes::from_static(b"h"), None),
            ],
            timestamp: 1_700_000_000_000 + i as i64,
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("meshgate-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_frame_reads_back_as_written_with_repeated_headers_and_null_values() {
        let records: Vec<_> = (0..5).map(rec).collect();
        let frame = encode_frame("shop.orders", "shop.orders.dlq", 3, &records);
        let (frames, whole) = read_frames(&frame, 0);
        assert_eq!(whole, frame.len());
        assert_eq!(frames.len(), 1);
        let (end, len, letter) = &frames[0];
        assert_eq!((*end, *len), (frame.len(), frame.len()));
        assert_eq!(
            letter,
            &Letter {
                contract_topic: Arc::from("shop.orders"),
                topic: Arc::from("shop.orders.dlq"),
                hint: 3,
                records,
            }
        );
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_whole_frames() {
        let a = encode_frame("t", "d", 0, &[rec(1)]);
        let b = encode_frame("t", "d", 1, &[rec(2), rec(4)]);
        let mut data = [a.as_ref(), b.as_ref()].concat();
        // Whole: both frames.
        assert_eq!(read_frames(&data, 0).0.len(), 2);
        // From the first frame's end: only the second.
        let (frames, _) = read_frames(&data, a.len());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].2.hint, 1);
        // Torn: the second frame cut short.
        let (frames, whole) = read_frames(&data[..data.len() - 3], 0);
        assert_eq!((frames.len(), whole), (1, a.len()));
        // Damaged: one byte of the second payload changed.
        let last = data.len() - 1;
        data[last] ^= 0xff;
        let (frames, whole) = read_frames(&data, 0);
        assert_eq!((frames.len(), whole), (1, a.len()));
        // A length past the end, and less than a header.
        assert_eq!(read_frames(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], 0).1, 0);
        assert_eq!(read_frames(&[0, 0, 0], 0).1, 0);
    }

    #[test]
    fn recovery_reads_what_follows_the_marker_cuts_a_torn_tail_and_removes_delivered_segments() {
        let d = dir("recover");
        let f = |i| encode_frame("t", "d", i, &[rec(i as usize)]);
        // Segment 1: delivered. Segment 2: the first frame delivered, two not; segment 3: one
        // frame and a torn one.
        fs::write(segment_path(&d, 1), [f(0), f(1)].concat()).unwrap();
        let first = f(2);
        fs::write(segment_path(&d, 2), [first.clone(), f(3), f(4)].concat()).unwrap();
        let tail = f(6);
        fs::write(
            segment_path(&d, 3),
            [f(5).as_ref(), &tail[..tail.len() / 2]].concat(),
        )
        .unwrap();
        write_marker(
            &d,
            Spooled {
                segment: 2,
                offset: first.len() as u64,
            },
            false,
        )
        .unwrap();
        let r = recover(&d).unwrap();
        let hints: Vec<i32> = r.entries.iter().map(|e| e.letter.hint).collect();
        assert_eq!(hints, [3, 4, 5]);
        assert_eq!(r.next_segment, 4);
        assert!(!segment_path(&d, 1).exists());
        assert_eq!(
            fs::metadata(segment_path(&d, 3)).unwrap().len(),
            f(5).len() as u64
        );
        // A second recovery finds the same letters (nothing is consumed by reading).
        assert_eq!(recover(&d).unwrap().entries.len(), 3);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn an_empty_or_new_directory_recovers_nothing_and_a_bad_marker_is_an_error() {
        let d = dir("empty");
        let r = recover(&d).unwrap();
        assert!(r.entries.is_empty());
        assert_eq!(r.next_segment, 1);
        fs::write(d.join(MARKER), "two words").unwrap();
        assert!(recover(&d).is_err());
        let _ = fs::remove_dir_all(&d);
    }

    fn counters() -> SpoolCounters {
        SpoolCounters {
            waiting_bytes: prometheus::IntGauge::new("w", "w").unwrap(),
            records: prometheus::IntCounterVec::new(
                prometheus::Opts::new("r", "r"),
                &["topic", "outcome"],
            )
            .unwrap(),
        }
    }

    /// A producer whose writes all fail at once: every broker address is unreachable.
    fn no_cluster() -> Producer {
        Producer::start(
            vec!["127.0.0.1:1".into()],
            super::super::Settings {
                tls: None,
                sasl: None,
                connect_timeout: Duration::from_millis(50),
            },
            Duration::from_millis(200),
        )
    }

    fn entry(segment: u64, offset: u64, done: bool) -> Entry {
        Entry {
            at: Spooled { segment, offset },
            frame_bytes: 100,
            letter: Letter {
                contract_topic: Arc::from("t"),
                topic: Arc::from("d"),
                hint: 0,
                records: vec![rec(0)],
            },
            done,
        }
    }

    #[tokio::test]
    async fn delivery_is_noted_only_up_to_the_first_letter_not_yet_written() {
        let d = dir("note");
        for s in 1..=3 {
            fs::write(segment_path(&d, s), b"").unwrap();
        }
        let c = counters();
        c.waiting_bytes.set(400);
        let mut delivery = Delivery {
            dir: d.clone(),
            fsync: false,
            producer: no_cluster(),
            counters: c,
            queue: VecDeque::from([
                entry(1, 100, false),
                entry(2, 100, true),
                entry(3, 100, true),
                entry(3, 200, false),
            ]),
        };
        // The head is not written: nothing is noted, nothing removed, though later ones are.
        delivery.note_delivered().await.unwrap();
        assert_eq!(delivery.queue.len(), 4);
        assert!(!d.join(MARKER).exists());
        assert_eq!(segments(&d).unwrap(), [1, 2, 3]);
        // Once it is, the note moves past every written letter in a row, and the segments
        // wholly behind it go.
        delivery.queue[0].done = true;
        delivery.note_delivered().await.unwrap();
        assert_eq!(delivery.queue.len(), 1);
        assert_eq!(
            read_marker(&d).unwrap(),
            Spooled {
                segment: 3,
                offset: 100
            }
        );
        assert_eq!(segments(&d).unwrap(), [3]);
        assert_eq!(delivery.counters.waiting_bytes.get(), 100);
        let _ = fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn letters_are_written_to_their_topic_after_a_refused_attempt_and_noted() {
        use super::super::producer::tests::fake;
        let script = Arc::new(fake::Script::default());
        // The first Produce is refused (TOPIC_AUTHORIZATION_FAILED, final for the producer):
        // the spool retries after its backoff.
        script.errors.lock().unwrap().push(29);
        let addr = fake::start(script.clone()).await;
        let producer = Producer::start(
            vec![addr],
            super::super::Settings {
                tls: None,
                sasl: None,
                connect_timeout: Duration::from_secs(2),
            },
            Duration::from_secs(5),
        );
        let d = dir("deliver");
        let c = counters();
        let spool = Spool::open(
            SpoolConfig {
                dir: d.clone(),
                max_bytes: 1 << 20,
                fsync: false,
            },
            producer,
            c.clone(),
        )
        .unwrap();
        let mut last = None;
        for (i, n) in [1usize, 2, 3].into_iter().enumerate() {
            let records = (0..n).map(rec).collect();
            let at = spool
                .write(Arc::from("t"), Arc::from("dlq"), i as i32, records)
                .await
                .unwrap()
                .unwrap();
            last = Some(at);
        }
        let last = last.unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while read_marker(&d).unwrap() != last {
            assert!(std::time::Instant::now() < end, "never noted as delivered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.records.with_label_values(&["t", "written"]).get(), 6);
        assert_eq!(c.waiting_bytes.get(), 0);
        // Every record reached the broker after the refusal (and some before it).
        let batches = script.batches.lock().unwrap().clone();
        let total: i32 = batches.iter().map(|b| b.3).sum();
        assert!(total > 6, "{batches:?}");
        // A restart finds nothing to deliver.
        drop(spool);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(recover(&d).unwrap().entries.is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn appends_are_answered_once_on_disk_kept_across_a_restart_and_bounded() {
        let d = dir("bound");
        let config = SpoolConfig {
            dir: d.clone(),
            max_bytes: 600,
            fsync: true,
        };
        let c = counters();
        let gauge = c.waiting_bytes.clone();
        let spool = Spool::open(config.clone(), no_cluster(), c).unwrap();
        // A second meshgate cannot share the directory.
        assert!(matches!(
            Spool::open(config.clone(), no_cluster(), counters()),
            Err(SpoolError::Locked { .. })
        ));
        let mut answers = Vec::new();
        for i in 0..20 {
            answers.push(spool.write(Arc::from("t"), Arc::from("d"), i, vec![rec(i as usize)]));
        }
        let (mut spooled, mut full) = (0, 0);
        for a in answers {
            match a.await.unwrap() {
                Ok(_) => spooled += 1,
                Err(WriteError::SpoolFull { max, .. }) => {
                    assert_eq!(max, 600);
                    full += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
        // The gauge counts what waits as soon as it is appended, not at the next delivery.
        assert!(gauge.get() > 0);
        // Each frame is about 100 bytes: some fit under 600, the rest are refused.
        assert!(spooled >= 3 && full >= 10, "{spooled} spooled, {full} full");
        // The cluster is unreachable, so nothing was delivered: all of it is read back.
        let on_disk = recover(&d).unwrap().entries.len();
        assert_eq!(on_disk, spooled);
        drop(spool);
        let _ = fs::remove_dir_all(&d);
    }
}
