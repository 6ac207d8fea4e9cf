//! A Fetch response walked as it streams from the upstream to the client: every byte goes on
//! as it arrives, except the record sets of the topics an [`SetEditor`] wants, which go on batch
//! by batch as the editor shows them. The walk reports, per topic, the record bytes, the records
//! and the partitions' high watermarks, so the answer can be accounted for without being held.
//!
//! **The answer keeps its size.** The frame's size prefix has gone out before the body
//! arrives, so an edited record set keeps its length:
//! - each whole batch goes on as the editor shows it, as long as what was written of the set
//!   still fits its length;
//! - the room left at the end (shown batches are mostly smaller: an opened field is shorter
//!   than its envelope) is filled with the head of a batch that claims more bytes than follow
//!   ([`filler`]). Clients take that as the partial batch brokers themselves send at the size
//!   limit, skip it, and fetch again from the offset after the last whole batch.
//! - A batch that does not fit (it grew) and every batch after it are left for the next fetch.
//!   If that is the set's first batch, the partition reads nothing this time; [`Streamed`] says
//!   so, and the caller holds such answers whole from then on.
//! - The broker's own trailing partial batch is dropped with the rest of the room: the filler
//!   must be the last thing in the set.
//!
//! **Memory:** one batch of an edited set at a time, and one read's worth otherwise.
//!
//! A body that stops following the layout goes on as it came from there: only whole batches
//! the walk has understood are ever replaced.

use std::future::Future;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::fetch_walk::TopicRef;
use super::frame::{FrameError, FrameReader};

/// What changes the record sets of some topics of a streamed Fetch answer.
pub trait SetEditor {
    /// Whether the record sets of this topic are edited (asked once per topic, before its
    /// partitions).
    fn wants(&mut self, topic: TopicRef<'_>) -> bool;

    /// One whole batch of the topic last wanted: appends what is shown instead to the empty
    /// `out` and says `true`, or says `false` to show the batch as it came.
    fn batch(&mut self, batch: &[u8], out: &mut Vec<u8>) -> impl Future<Output = bool> + Send;
}

/// The editor of an answer that is only counted.
pub struct NoEdit;

impl SetEditor for NoEdit {
    fn wants(&mut self, _: TopicRef<'_>) -> bool {
        false
    }

    async fn batch(&mut self, _: &[u8], _: &mut Vec<u8>) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Upstream(#[from] FrameError),
    #[error("writing to the client: {0}")]
    Client(std::io::Error),
}

/// How a streamed answer went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// The body followed the layout to its end (else the rest went on as it came, and the
    /// topics after the break were not reported).
    pub walked: bool,
    /// Edited record sets that were cut short: a batch did not fit.
    pub cut: usize,
    /// A set whose first batch did not fit: that partition read nothing this time.
    pub cut_first: bool,
}

/// The v2 batch header's length: what must be buffered to read a batch's length, magic and
/// record count.
const BATCH_HEAD: usize = 61;

/// Streams the rest of a Fetch answer at `version` (`left` bytes: the frame after the
/// correlation id, which the caller has written with the size prefix) from `reader` to
/// `client`, with `editor` showing the sets it wants. `each` is called at the end of every
/// topic with its record bytes (as the upstream sent them), its records (counted from the batch
/// headers, only with `count_records` or in edited sets: what was shown), and the (partition,
/// high watermark) of its partitions answered without error.
pub async fn stream_fetch<R, W, E>(
    reader: &mut FrameReader<R>,
    client: &mut W,
    left: usize,
    version: i16,
    count_records: bool,
    editor: &mut E,
    mut each: impl FnMut(TopicRef<'_>, u64, u64, &[(i32, i64)]),
) -> Result<Streamed, StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    E: SetEditor,
{
    let mut t = Through {
        reader,
        client,
        left,
        flexible: version >= 12,
    };
    let mut streamed = Streamed::default();
    let walked = walk(
        &mut t,
        version,
        count_records,
        editor,
        &mut each,
        &mut streamed,
    )
    .await?;
    streamed.walked = walked.is_some();
    let rest = t.left;
    t.forward(rest).await?;
    Ok(streamed)
}

/// Ends a step of the walk when the body stops following the layout.
macro_rules! step {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

async fn walk<R, W, E>(
    t: &mut Through<'_, R, W>,
    version: i16,
    count_records: bool,
    editor: &mut E,
    each: &mut impl FnMut(TopicRef<'_>, u64, u64, &[(i32, i64)]),
    streamed: &mut Streamed,
) -> Result<Option<()>, StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    E: SetEditor,
{
    step!(t.tags().await); // the response header's
    step!(t.pass(4).await); // throttle_time_ms
    if version >= 7 {
        step!(t.pass(2 + 4).await); // error_code, session_id
    }
    let mut watermarks: Vec<(i32, i64)> = Vec::new();
    for _ in 0..step!(t.array_len().await) {
        let name: Bytes;
        let topic = if version >= 13 {
            let id = step!(t.pass(16).await);
            TopicRef::Id(id[..].try_into().expect("16 bytes"))
        } else {
            name = step!(t.string().await);
            match std::str::from_utf8(&name) {
                Ok(n) => TopicRef::Name(n),
                Err(_) => return Ok(None),
            }
        };
        let edited = editor.wants(topic);
        watermarks.clear();
        let (mut bytes, mut records) = (0u64, 0u64);
        for _ in 0..step!(t.array_len().await) {
            let head = step!(t.pass(4 + 2 + 8 + 8).await);
            let partition = i32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
            let error_code = i16::from_be_bytes(head[4..6].try_into().expect("2 bytes"));
            let high_watermark = i64::from_be_bytes(head[6..14].try_into().expect("8 bytes"));
            if version >= 5 {
                step!(t.pass(8).await); // log_start_offset
            }
            for _ in 0..step!(t.array_len().await) {
                step!(t.pass(8 + 8).await); // aborted: producer_id, first_offset
                step!(t.tags().await);
            }
            if version >= 11 {
                step!(t.pass(4).await); // preferred_read_replica
            }
            let len = step!(t.bytes_len().await);
            if len > t.left {
                return Ok(None);
            }
            records += if edited && len > 0 {
                let (n, shown) = t.edit_set(len, editor).await?;
                if shown.cut {
                    streamed.cut += 1;
                    streamed.cut_first |= shown.first;
                }
                n
            } else if count_records {
                t.pass_set_counting(len).await?
            } else {
                step!(t.forward(len).await);
                0
            };
            bytes += len as u64;
            if error_code == 0 {
                watermarks.push((partition, high_watermark));
            }
            step!(t.tags().await);
        }
        step!(t.tags().await);
        each(topic, bytes, records, &watermarks);
    }
    step!(t.tags().await);
    Ok(Some(()))
}

/// How an edited set was cut short.
struct Cut {
    cut: bool,
    /// At its first batch.
    first: bool,
}

/// The answer being streamed: what is left of it upstream, and the client it goes to.
struct Through<'a, R, W> {
    reader: &'a mut FrameReader<R>,
    client: &'a mut W,
    left: usize,
    flexible: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Through<'_, R, W> {
    /// Passes the next `n` bytes on and returns them; `None` when the answer has fewer left.
    async fn pass(&mut self, n: usize) -> Result<Option<Bytes>, StreamError> {
        if n > self.left {
            return Ok(None);
        }
        let b = self.reader.take(n).await?;
        self.left -= n;
        self.write(&b).await?;
        Ok(Some(b))
    }

    /// Passes the next `n` bytes on without looking at them.
    async fn forward(&mut self, n: usize) -> Result<Option<()>, StreamError> {
        if n > self.left {
            return Ok(None);
        }
        self.reader
            .forward_rest(n, &mut *self.client)
            .await?
            .map_err(StreamError::Client)?;
        self.left -= n;
        Ok(Some(()))
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), StreamError> {
        self.client.write_all(b).await.map_err(StreamError::Client)
    }

    async fn uvarint(&mut self) -> Result<Option<u64>, StreamError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(b) = self.pass(1).await? else {
                return Ok(None);
            };
            v |= ((b[0] & 0x7f) as u64) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    async fn i32(&mut self) -> Result<Option<i32>, StreamError> {
        Ok(self
            .pass(4)
            .await?
            .map(|b| i32::from_be_bytes(b[..].try_into().expect("4 bytes"))))
    }

    /// An array's length (a null array counts as empty); `None` beyond what is left, as every
    /// element takes at least a byte.
    async fn array_len(&mut self) -> Result<Option<usize>, StreamError> {
        let n = if self.flexible {
            step!(self.uvarint().await).saturating_sub(1) as usize
        } else {
            step!(self.i32().await).max(0) as usize
        };
        Ok((n <= self.left).then_some(n))
    }

    async fn string(&mut self) -> Result<Option<Bytes>, StreamError> {
        let n = if self.flexible {
            step!(self.uvarint().await).checked_sub(1)
        } else {
            let b = step!(self.pass(2).await);
            u64::try_from(i16::from_be_bytes([b[0], b[1]])).ok()
        };
        let Some(n) = n.and_then(|n| usize::try_from(n).ok()) else {
            return Ok(None);
        };
        self.pass(n).await
    }

    /// The length of a nullable bytes field (0 when null), its prefix passed on.
    async fn bytes_len(&mut self) -> Result<Option<usize>, StreamError> {
        Ok(Some(if self.flexible {
            step!(self.uvarint().await).saturating_sub(1) as usize
        } else {
            step!(self.i32().await).max(0) as usize
        }))
    }

    async fn tags(&mut self) -> Result<Option<()>, StreamError> {
        if !self.flexible {
            return Ok(Some(()));
        }
        for _ in 0..step!(self.uvarint().await) {
            step!(self.uvarint().await); // tag
            let len = step!(self.uvarint().await);
            step!(
                self.forward(usize::try_from(len).unwrap_or(usize::MAX))
                    .await
            );
        }
        Ok(Some(()))
    }

    /// The next whole batch of a set with `room` bytes left in it: its length and header, or
    /// `None` at the set's tail (a partial batch, or bytes that are no batch).
    async fn batch_head(&mut self, room: usize) -> Result<Option<BatchHead>, StreamError> {
        if room < BATCH_HEAD {
            return Ok(None);
        }
        let h = self.reader.peek(BATCH_HEAD).await?;
        let length = i32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(length).ok().and_then(|l| l.checked_add(12));
        let Some(total) = total.filter(|&t| (BATCH_HEAD..=room).contains(&t)) else {
            return Ok(None);
        };
        let v2 = h[16] == 2;
        Ok(Some(BatchHead {
            total,
            base_offset: i64::from_be_bytes(h[0..8].try_into().expect("8 bytes")),
            next_offset: v2.then(|| {
                let delta = i32::from_be_bytes(h[23..27].try_into().expect("4 bytes"));
                i64::from_be_bytes(h[0..8].try_into().expect("8 bytes")) + i64::from(delta) + 1
            }),
            records: if v2 {
                u64::try_from(i32::from_be_bytes(h[57..61].try_into().expect("4 bytes")))
                    .unwrap_or(0)
            } else {
                0
            },
        }))
    }

    /// Passes a set of `len` bytes on, counting the records of its whole batches.
    async fn pass_set_counting(&mut self, len: usize) -> Result<u64, StreamError> {
        let (mut read, mut records) = (0, 0);
        while let Some(b) = self.batch_head(len - read).await? {
            self.forward(b.total).await?;
            read += b.total;
            records += b.records;
        }
        self.forward(len - read).await?;
        Ok(records)
    }

    /// Streams a set of `len` bytes as `editor` shows it, keeping its length: the records
    /// shown, and whether it was cut short.
    async fn edit_set<E: SetEditor>(
        &mut self,
        len: usize,
        editor: &mut E,
    ) -> Result<(u64, Cut), StreamError> {
        let (mut read, mut written, mut records) = (0usize, 0usize, 0u64);
        let mut cut = Cut {
            cut: false,
            first: false,
        };
        // The offset the client fetches next: after the last batch shown, or the first one
        // left for later.
        let mut next_offset = None;
        let mut out = Vec::new();
        while let Some(b) = self.batch_head(len - read).await? {
            let batch = self.reader.take(b.total).await?;
            self.left -= b.total;
            read += b.total;
            out.clear();
            let shown = if editor.batch(&batch, &mut out).await {
                &out[..]
            } else {
                &batch[..]
            };
            if written + shown.len() > len {
                cut = Cut {
                    cut: true,
                    first: written == 0,
                };
                next_offset = Some(b.base_offset);
                break;
            }
            self.client
                .write_all(shown)
                .await
                .map_err(StreamError::Client)?;
            written += shown.len();
            records += b.records;
            next_offset = b.next_offset;
        }
        self.reader.discard(len - read).await?;
        self.left -= len - read;
        out.clear();
        filler(len - written, next_offset.unwrap_or(-1), &mut out);
        self.write(&out).await?;
        Ok((records, cut))
    }
}

struct BatchHead {
    total: usize,
    base_offset: i64,
    next_offset: Option<i64>,
    records: u64,
}

/// `n` bytes that every client reads as a trailing partial batch, starting at `base_offset`:
/// - under 12 bytes, too short for a batch's offset and length: zeros;
/// - else an offset, then a length that claims at least one byte more than follows (and no
///   less than the smallest legal batch, 14, which the Java client checks), then, from byte 16,
///   magic 2 (the Java client checks it before the length) and zeros.
pub fn filler(n: usize, base_offset: i64, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + n, 0);
    if n < 12 {
        return;
    }
    let claimed = i32::try_from((n - 11).max(14)).unwrap_or(i32::MAX);
    out[start..start + 8].copy_from_slice(&base_offset.to_be_bytes());
    out[start + 8..start + 12].copy_from_slice(&claimed.to_be_bytes());
    if n > 16 {
        out[start + 16] = 2;
    }
}

#[cfg(test)]
mod tests;
