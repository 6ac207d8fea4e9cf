//! Length-prefixed Kafka frames: a big-endian `i32` size, then that many bytes.
//!
//! [`FrameReader`] grows its buffer only as bytes actually arrive, so a peer that announces a
//! 2 GiB frame and then trickles costs what it sent, never what it claimed. A frame larger than the
//! configured maximum, or with a negative size, is an error and the caller closes the connection.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from the socket per `read` call at most when no frame size is known yet.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { size: i64, max: usize },
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`FrameReader::read_request`] took off the stream.
#[derive(Debug)]
pub enum Incoming {
    /// A whole frame: the 4-byte size prefix, then the payload.
    Whole(Bytes),
    /// A frame too large to hold: its declared size and the start of its payload.
    Head { size: usize, head: Bytes },
}

impl Incoming {
    /// The declared payload size, the first `max_head` bytes of the payload, and the whole frame
    /// (prefix included) when it was held.
    pub fn parts(self, max_head: usize) -> (usize, Bytes, Option<Bytes>) {
        match self {
            Incoming::Whole(raw) => {
                let size = raw.len() - 4;
                (size, raw.slice(4..4 + size.min(max_head)), Some(raw))
            }
            Incoming::Head { size, head } => (size, head, None),
        }
    }
}

/// Reads whole frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
        }
    }

    /// The next frame's payload (without its size prefix), or `None` on a clean end of stream at a
    /// frame boundary.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.read_head(usize::MAX).await?.map(|(_, frame)| frame))
    }

    /// The start of the next frame: its declared size and up to `max_head` bytes of its payload,
    /// or `None` on a clean end of stream. The rest of the frame must then be taken with
    /// [`FrameReader::read_rest`] or [`FrameReader::forward_rest`]. This lets a proxy decide from
    /// the header alone whether it must hold the whole frame or can stream it.
    pub async fn read_head(
        &mut self,
        max_head: usize,
    ) -> Result<Option<(usize, Bytes)>, FrameError> {
        Ok(match self.next_incoming(max_head, None).await? {
            None => None,
            Some(Incoming::Head { size, head }) => Some((size, head)),
            Some(Incoming::Whole(_)) => unreachable!("no frame is held whole without a limit"),
        })
    }

    /// The next frame whole, size prefix included, when it declares at most `hold` bytes; the
    /// head of a larger one, as [`FrameReader::read_head`] gives it. A frame taken whole can be
    /// written on with one `write`, so the peer is woken once for it and not once per read chunk.
    pub async fn read_request(
        &mut self,
        max_head: usize,
        hold: usize,
    ) -> Result<Option<Incoming>, FrameError> {
        self.next_incoming(max_head, Some(hold)).await
    }

    async fn next_incoming(
        &mut self,
        max_head: usize,
        hold: Option<usize>,
    ) -> Result<Option<Incoming>, FrameError> {
        loop {
            let mut target = 4;
            if let Some(size) = self.declared_size() {
                let size = size?;
                if hold.is_some_and(|h| size <= h) {
                    if self.buf.len() >= 4 + size {
                        return Ok(Some(Incoming::Whole(self.buf.split_to(4 + size).freeze())));
                    }
                    target = 4 + size;
                } else {
                    let want = size.min(max_head);
                    if self.buf.len() >= 4 + want {
                        self.buf.advance(4);
                        return Ok(Some(Incoming::Head {
                            size,
                            head: self.buf.split_to(want).freeze(),
                        }));
                    }
                    target = 4 + want;
                }
            }
            // Read ahead at least a chunk (pipelined small frames), but never reserve more than
            // 1 MiB beyond what has arrived: a claimed size is not trusted for allocation.
            let want = target
                .saturating_sub(self.buf.len())
                .clamp(READ_CHUNK, READ_CHUNK * 16);
            self.buf.reserve(want);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated {
                        buffered: self.buf.len(),
                    })
                };
            }
        }
    }

    /// Reads the `remaining` bytes of a frame whose head was taken, returning head + rest.
    pub async fn read_rest(&mut self, head: Bytes, remaining: usize) -> Result<Bytes, FrameError> {
        if remaining == 0 {
            return Ok(head);
        }
        while self.buf.len() < remaining {
            self.buf
                .reserve((remaining - self.buf.len()).min(READ_CHUNK * 16));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Truncated {
                    buffered: head.len() + self.buf.len(),
                });
            }
        }
        let mut whole = bytes::BytesMut::with_capacity(head.len() + remaining);
        whole.extend_from_slice(&head);
        whole.extend_from_slice(&self.buf.split_to(remaining));
        Ok(whole.freeze())
    }

    /// Copies the `remaining` bytes of a frame whose head was taken straight to `out`, as they
    /// arrive, holding at most one read's worth in memory. A client error (truncation) and an
    /// output error are told apart: `Ok(Err(e))` is the output failing.
    pub async fn forward_rest<W: AsyncWrite + Unpin>(
        &mut self,
        remaining: usize,
        out: &mut W,
    ) -> Result<Result<(), std::io::Error>, FrameError> {
        self.forward_rest_copying(remaining, out, None).await
    }

    /// As [`FrameReader::forward_rest`], also appending every byte forwarded to `copy` when
    /// given (for a caller that must read the frame once it has gone on).
    pub async fn forward_rest_copying<W: AsyncWrite + Unpin>(
        &mut self,
        mut remaining: usize,
        out: &mut W,
        mut copy: Option<&mut BytesMut>,
    ) -> Result<Result<(), std::io::Error>, FrameError> {
        while remaining > 0 {
            if self.buf.is_empty() {
                self.buf.reserve(remaining.min(READ_CHUNK * 4));
                if self.inner.read_buf(&mut self.buf).await? == 0 {
                    return Err(FrameError::Truncated {
                        buffered: self.buf.len(),
                    });
                }
            }
            let n = self.buf.len().min(remaining);
            let chunk = self.buf.split_to(n);
            if let Some(copy) = copy.as_deref_mut() {
                copy.extend_from_slice(&chunk);
            }
            if let Err(e) = out.write_all(&chunk).await {
                return Ok(Err(e));
            }
            remaining -= n;
        }
        Ok(Ok(()))
    }

    /// The next `n` bytes of the frame being read, buffered but not taken. The caller knows
    /// they belong to the frame (it has counted what is left of it), so `n` is bounded by the
    /// frame's declared size, which was checked against the maximum.
    pub async fn peek(&mut self, n: usize) -> Result<&[u8], FrameError> {
        while self.buf.len() < n {
            self.buf
                .reserve((n - self.buf.len()).clamp(READ_CHUNK, READ_CHUNK * 16));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Truncated {
                    buffered: self.buf.len(),
                });
            }
        }
        Ok(&self.buf[..n])
    }

    /// Takes the next `n` bytes of the frame being read (see [`FrameReader::peek`]).
    pub async fn take(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.peek(n).await?;
        Ok(self.buf.split_to(n).freeze())
    }

    /// Reads and drops the next `n` bytes of the frame being read, holding at most one read's
    /// worth of them.
    pub async fn discard(&mut self, mut n: usize) -> Result<(), FrameError> {
        while n > 0 {
            if self.buf.is_empty() {
                self.buf.reserve(n.min(READ_CHUNK * 4));
                if self.inner.read_buf(&mut self.buf).await? == 0 {
                    return Err(FrameError::Truncated { buffered: 0 });
                }
            }
            let k = self.buf.len().min(n);
            self.buf.advance(k);
            n -= k;
        }
        Ok(())
    }

    /// True when a complete frame is already buffered, so the caller may defer a flush.
    pub fn has_buffered_frame(&self) -> bool {
        matches!(self.declared_size(), Some(Ok(n)) if self.buf.len() >= 4 + n)
    }

    fn declared_size(&self) -> Option<Result<usize, FrameError>> {
        if self.buf.len() < 4 {
            return None;
        }
        let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        Some(if size < 0 {
            Err(FrameError::NegativeSize(size))
        } else if size as usize > self.max_frame {
            Err(FrameError::TooLarge {
                size: size as i64,
                max: self.max_frame,
            })
        } else {
            Ok(size as usize)
        })
    }
}

/// Writes one frame: its size prefix, then the payload, as one vectored write where the writer
/// supports it (a buffered writer passes a large frame straight through, and the prefix must not
/// go out as a segment of its own). Does not flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    write_frame_head(w, payload.len(), payload).await
}

/// Writes one frame whose payload is `parts`, one after the other (the size prefix first, with
/// the first part). Does not flush.
pub async fn write_frame_parts<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[Bytes],
) -> std::io::Result<()> {
    let size = parts.iter().map(Bytes::len).sum();
    let (first, rest) = match parts.split_first() {
        Some((f, r)) => (&f[..], r),
        None => (&[][..], &[][..]),
    };
    write_frame_head(w, size, first).await?;
    for p in rest {
        w.write_all(p).await?;
    }
    Ok(())
}

/// Writes the size prefix of a frame of `size` payload bytes and the first of them, `head`, in
/// one write as [`write_frame`] does; the rest of the payload must follow. Does not flush.
pub async fn write_frame_head<W: AsyncWrite + Unpin>(
    w: &mut W,
    size: usize,
    head: &[u8],
) -> std::io::Result<()> {
    let len = i32::try_from(size)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    let prefix = len.to_be_bytes();
    w.write_all_buf(&mut Buf::chain(prefix.as_slice(), head))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_of_parts_reads_back_as_one_frame() {
        let mut out = Vec::new();
        let parts = [
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ];
        write_frame_parts(&mut out, &parts).await.unwrap();
        assert_eq!(out, b"\0\0\0\x05abcde");
        let (frames, _) = frames_of(&out, 100).await;
        assert_eq!(frames, vec![Bytes::from_static(b"abcde")]);
        out.clear();
        write_frame_parts(&mut out, &[]).await.unwrap();
        assert_eq!(out, b"\0\0\0\0");
    }

    async fn frames_of(input: &[u8], max: usize) -> (Vec<Bytes>, Option<FrameError>) {
        let mut r = FrameReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match r.read_frame().await {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(&(p.len() as i32).to_be_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    #[tokio::test]
    async fn reads_back_to_back_frames_and_clean_eof() {
        let (frames, err) = frames_of(&framed(&[b"abc", b"", b"defgh"]), 1024).await;
        assert!(err.is_none());
        assert_eq!(frames, vec![&b"abc"[..], &b""[..], &b"defgh"[..]]);
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_a_frame() {
        let mut bytes = framed(&[b"abcdef"]);
        bytes.truncate(7);
        let (frames, err) = frames_of(&bytes, 1024).await;
        assert!(frames.is_empty());
        assert!(matches!(err, Some(FrameError::Truncated { buffered: 7 })));
    }

    #[tokio::test]
    async fn oversized_and_negative_sizes_are_refused_before_allocating() {
        let (_, err) = frames_of(&i32::MAX.to_be_bytes(), 1024).await;
        assert!(matches!(err, Some(FrameError::TooLarge { .. })));
        let (_, err) = frames_of(&(-5i32).to_be_bytes(), 1024).await;
        assert!(matches!(err, Some(FrameError::NegativeSize(-5))));
    }

    #[tokio::test]
    async fn a_huge_claim_allocates_only_what_arrives() {
        let mut bytes = (50_000_000i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 10]);
        let mut r = FrameReader::new(&bytes[..], 100_000_000);
        assert!(matches!(
            r.read_frame().await,
            Err(FrameError::Truncated { .. })
        ));
        assert!(
            r.buf.capacity() <= READ_CHUNK * 16 + READ_CHUNK,
            "capacity {}",
            r.buf.capacity()
        );
        // The same through the head-first path the connection uses.
        let mut r = FrameReader::new(&bytes[..], 100_000_000);
        assert!(matches!(
            r.read_head(usize::MAX).await,
            Err(FrameError::Truncated { .. })
        ));
        assert!(
            r.buf.capacity() <= READ_CHUNK * 16 + READ_CHUNK,
            "capacity {}",
            r.buf.capacity()
        );
    }

    #[tokio::test]
    async fn head_then_rest_or_forward_reassembles_every_frame() {
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let input = framed(&[b"tiny", &big, b"", &big[..1000]]);
        let mut r = FrameReader::new(&input[..], 1 << 20);
        let (n, head) = r.read_head(64).await.unwrap().unwrap();
        assert_eq!((n, &head[..]), (4, &b"tiny"[..]));
        let (n, head) = r.read_head(64).await.unwrap().unwrap();
        assert_eq!((n, head.len()), (200_000, 64));
        let whole = r.read_rest(head, n - 64).await.unwrap();
        assert_eq!(&whole[..], &big[..]);
        let (n, head) = r.read_head(64).await.unwrap().unwrap();
        assert_eq!((n, head.len()), (0, 0));
        let (n, head) = r.read_head(64).await.unwrap().unwrap();
        let mut out = head.to_vec();
        r.forward_rest(n - head.len(), &mut out)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&out[..], &big[..1000]);
        assert!(r.read_head(64).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn requests_up_to_the_hold_come_whole_with_their_prefix_and_larger_ones_as_a_head() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let input = framed(&[b"tiny", &big, b"", &big[..100_000]]);
        let mut r = FrameReader::new(&input[..], 1 << 20);
        let mut at = 0;
        for expect_whole in [true, false, true, true] {
            match r.read_request(64, 200_000).await.unwrap().unwrap() {
                Incoming::Whole(raw) => {
                    assert!(expect_whole, "frame at {at} came whole");
                    assert_eq!(&raw[..], &input[at..at + raw.len()]);
                    at += raw.len();
                }
                Incoming::Head { size, head } => {
                    assert!(!expect_whole, "frame at {at} came as a head");
                    assert_eq!((size, &head[..]), (big.len(), &big[..64]));
                    let rest = r.read_rest(head, size - 64).await.unwrap();
                    assert_eq!(&rest[..], &big[..]);
                    at += 4 + size;
                }
            }
        }
        assert_eq!(at, input.len());
        assert!(r.read_request(64, 200_000).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_claim_under_the_hold_still_allocates_only_what_arrives() {
        let mut bytes = (3_000_000i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 10]);
        let mut r = FrameReader::new(&bytes[..], 100_000_000);
        assert!(matches!(
            r.read_request(1024, 4 << 20).await,
            Err(FrameError::Truncated { buffered: 14 })
        ));
        assert!(
            r.buf.capacity() <= READ_CHUNK * 17,
            "capacity {}",
            r.buf.capacity()
        );
    }

    /// Records the size of every write that reaches it.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.get_mut().0.push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = bufs.iter().map(|b| b.len()).sum();
            self.get_mut().0.push(n);
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_large_frame_leaves_a_buffered_writer_as_one_write_prefix_included() {
        // A prefix written on its own would reach the peer as a 4-byte segment and wake it twice.
        let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, Writes::default());
        write_frame(&mut w, &vec![1u8; 200_000]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().0, vec![200_004]);
        // Small frames are gathered and go out together at the flush.
        let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, Writes::default());
        for _ in 0..3 {
            write_frame(&mut w, b"hello").await.unwrap();
        }
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().0, vec![27]);
    }

    #[tokio::test]
    async fn a_stream_cut_while_forwarding_is_truncation() {
        let big = vec![7u8; 5000];
        let mut input = framed(&[&big]);
        input.truncate(3000);
        let mut r = FrameReader::new(&input[..], 1 << 20);
        let (n, head) = r.read_head(100).await.unwrap().unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            r.forward_rest(n - head.len(), &mut out).await,
            Err(FrameError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn write_then_read_round_trips() {
        let mut out = Vec::new();
        write_frame(&mut out, b"hello").await.unwrap();
        let (frames, err) = frames_of(&out, 16).await;
        assert!(err.is_none());
        assert_eq!(frames, vec![&b"hello"[..]]);
    }
}
