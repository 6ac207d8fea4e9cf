use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProducerId, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use tokio::io::{AsyncRead, ReadBuf};

use super::*;
use crate::protocol::records::test_batch;

/// An upstream that hands out at most `step` bytes per read.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .step
            .min(self.data.len() - self.at)
            .min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// A batch of `n` records whose values are `value`, at `base` offset.
fn batch(base: i64, n: usize, value: &[u8]) -> Vec<u8> {
    let specs: Vec<test_batch::Spec<'_>> = (0..n).map(|_| (None, Some(value), &[][..])).collect();
    let mut b = test_batch::encode(&specs, Compression::None);
    b[..8].copy_from_slice(&base.to_be_bytes());
    b
}

/// A Fetch answer (correlation id 9) at `version`: topic `t` (id 1) with `sets` on partitions
/// 0.., each with an aborted transaction; topic `u` (id 2) with `other` on partition 0.
fn answer(version: i16, sets: &[Vec<u8>], other: &[u8]) -> Vec<u8> {
    let mut r = FetchResponse::default();
    if version >= 7 {
        r.session_id = 77;
    }
    for (i, (name, sets)) in [("t", sets), ("u", &[other.to_vec()][..])]
        .into_iter()
        .enumerate()
    {
        let mut t = FetchableTopicResponse::default();
        if version >= 13 {
            t.topic_id = uuid::Uuid::from_bytes([i as u8 + 1; 16]);
        } else {
            t.topic = TopicName(StrBytes::from_static_str(name));
        }
        for (p, set) in sets.iter().enumerate() {
            let mut pd = PartitionData::default();
            pd.partition_index = p as i32;
            pd.high_watermark = 100 * (i as i64 + 1) + p as i64;
            pd.last_stable_offset = 90;
            pd.aborted_transactions = Some(vec![AbortedTransaction::default()
                .with_producer_id(ProducerId(5))
                .with_first_offset(3)]);
            pd.records = (!set.is_empty()).then(|| Bytes::copy_from_slice(set));
            t.partitions.push(pd);
        }
        r.responses.push(t);
    }
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(9)
        .encode(&mut out, ApiKey::Fetch.response_header_version(version))
        .unwrap();
    r.encode(&mut out, version).unwrap();
    out.to_vec()
}

type Topics = Vec<(String, u64, u64, Vec<(i32, i64)>)>;

/// Streams `frame` (without its size prefix) read `step` bytes at a time: what the client got
/// (without the size prefix), how it went, and what was reported per topic.
async fn stream<E: SetEditor>(
    frame: &[u8],
    version: i16,
    step: usize,
    count: bool,
    editor: &mut E,
) -> (Vec<u8>, Result<Streamed, StreamError>, Topics) {
    let mut data = (frame.len() as i32).to_be_bytes().to_vec();
    data.extend_from_slice(frame);
    let mut reader = FrameReader::new(Chunked { data, at: 0, step }, 1 << 30);
    let (size, head) = reader.read_head(4).await.unwrap().unwrap();
    let mut out = head.to_vec();
    let mut topics = Vec::new();
    let r = stream_fetch(
        &mut reader,
        &mut out,
        size - head.len(),
        version,
        count,
        editor,
        |t, bytes, records, marks| {
            let name = match t {
                TopicRef::Name(n) => n.to_string(),
                TopicRef::Id(id) => format!("id{}", id[0]),
            };
            topics.push((name, bytes, records, marks.to_vec()));
        },
    )
    .await;
    (out, r, topics)
}

/// The Java client's reading of a record set (`ByteBufferLogInputStream.nextBatchSize`): the
/// whole batches, then `Ok` at a partial one, or `Err` where it would throw.
fn java_batches(mut set: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    loop {
        if set.len() < 12 {
            return Ok(out);
        }
        let size = i32::from_be_bytes(set[8..12].try_into().unwrap());
        if size < 14 {
            return Err(format!("record size {size} below 14"));
        }
        if set.len() < 17 {
            return Ok(out);
        }
        if !(0..=2).contains(&set[16]) {
            return Err(format!("magic {}", set[16]));
        }
        let total = size as usize + 12;
        if set.len() < total {
            return Ok(out);
        }
        out.push(&set[..total]);
        set = &set[total..];
    }
}

/// Shows the batches of topic `t` through `f` (None: as they came).
struct Map<F>(F, bool);

impl<F: FnMut(&[u8]) -> Option<Vec<u8>> + Send> SetEditor for Map<F> {
    fn wants(&mut self, topic: TopicRef<'_>) -> bool {
        self.1 = matches!(topic, TopicRef::Name("t") | TopicRef::Id([1, ..]));
        self.1
    }

    async fn batch(&mut self, batch: &[u8], out: &mut Vec<u8>) -> bool {
        assert!(self.1, "a batch of a topic not wanted");
        match (self.0)(batch) {
            Some(b) => {
                out.extend_from_slice(&b);
                true
            }
            None => false,
        }
    }
}

fn records_of(frame: &[u8], version: i16) -> FetchResponse {
    let mut b = Bytes::copy_from_slice(frame);
    ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(version)).unwrap();
    FetchResponse::decode(&mut b, version).unwrap()
}

#[tokio::test]
async fn an_answer_nobody_edits_goes_on_byte_for_byte_and_is_counted() {
    let t = vec![
        [batch(0, 3, b"aaaa"), batch(3, 2, b"bb")].concat(),
        Vec::new(),
    ];
    let mut partial = batch(0, 4, b"cc");
    partial.extend_from_slice(&batch(4, 3, b"dd")[..40]);
    for version in 4..=15 {
        let frame = answer(version, &t, &partial);
        for step in [1, 7, 64 << 10] {
            for count in [false, true] {
                let (out, r, topics) = stream(&frame, version, step, count, &mut NoEdit).await;
                let r = r.unwrap();
                assert_eq!(out, frame, "v{version} step {step}");
                assert!(r.walked && r.cut == 0, "v{version}");
                let (t_records, u_records) = if count { (5, 4) } else { (0, 0) };
                let names = if version >= 13 {
                    ["id1", "id2"]
                } else {
                    ["t", "u"]
                };
                assert_eq!(
                    topics,
                    vec![
                        (
                            names[0].into(),
                            t[0].len() as u64,
                            t_records,
                            vec![(0, 100), (1, 101)]
                        ),
                        (
                            names[1].into(),
                            partial.len() as u64,
                            u_records,
                            vec![(0, 200)]
                        ),
                    ],
                    "v{version} step {step}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_edited_set_keeps_its_length_and_ends_in_a_filler_every_client_skips() {
    let long = batch(10, 3, &[b'x'; 300]);
    let set = [long.clone(), batch(13, 2, &[b'y'; 200])].concat();
    let other = batch(0, 2, b"other");
    let shrink = |b: &[u8]| {
        let base = i64::from_be_bytes(b[..8].try_into().unwrap());
        let n = i32::from_be_bytes(b[57..61].try_into().unwrap()) as usize;
        Some(batch(base, n, b"short"))
    };
    for version in [4i16, 11, 12, 13, 15] {
        let frame = answer(version, std::slice::from_ref(&set), &other);
        for step in [1, 5, 64 << 10] {
            let (out, r, topics) =
                stream(&frame, version, step, false, &mut Map(shrink, false)).await;
            let r = r.unwrap();
            assert!(r.walked && r.cut == 0, "v{version}");
            assert_eq!(
                out.len(),
                frame.len(),
                "v{version}: the size prefix still holds"
            );
            // Records shown in the edited set are counted even without `count`.
            assert_eq!(topics[0].2, 5);
            let got = records_of(&out, version);
            let want = records_of(&frame, version);
            assert_eq!(got.session_id, want.session_id);
            let (p, q) = (
                &got.responses[0].partitions[0],
                &want.responses[0].partitions[0],
            );
            assert_eq!(
                (
                    p.high_watermark,
                    p.last_stable_offset,
                    &p.aborted_transactions
                ),
                (
                    q.high_watermark,
                    q.last_stable_offset,
                    &q.aborted_transactions
                )
            );
            let shown = p.records.clone().unwrap();
            let whole = java_batches(&shown).unwrap();
            assert_eq!(
                whole,
                vec![&batch(10, 3, b"short")[..], &batch(13, 2, b"short")[..]]
            );
            // The filler starts at the offset after the last batch shown.
            let tail = &shown[whole[0].len() + whole[1].len()..];
            assert_eq!(i64::from_be_bytes(tail[..8].try_into().unwrap()), 15);
            // meshgate's own reader takes it as the partial batch too.
            let ours: Vec<_> = crate::protocol::records::batches(&shown).collect();
            assert_eq!(ours.iter().filter(|b| b.is_ok()).count(), 2);
            assert_eq!(
                got.responses[1].partitions[0].records.as_deref(),
                Some(&other[..]),
                "the unedited topic is the bytes that came"
            );
        }
    }
}

#[tokio::test]
async fn a_batch_that_grows_past_the_room_is_left_for_the_next_fetch() {
    let set = [
        batch(0, 2, b"aaaaaaaa"),
        batch(2, 2, b"bbbbbbbb"),
        batch(4, 1, b"c"),
    ]
    .concat();
    let first_len = batch(0, 2, b"aaaaaaaa").len();
    for version in [4i16, 12, 15] {
        let frame = answer(version, std::slice::from_ref(&set), &[]);
        // The second batch grows beyond what is left: the first goes, the rest waits.
        let grow_second = |b: &[u8]| (b[7] == 2).then(|| batch(2, 2, &[b'z'; 400]));
        let (out, r, topics) =
            stream(&frame, version, 3, false, &mut Map(grow_second, false)).await;
        let r = r.unwrap();
        assert_eq!((r.cut, r.cut_first), (1, false), "v{version}");
        assert_eq!(out.len(), frame.len());
        assert_eq!(topics[0].2, 2, "only the records shown");
        let shown = records_of(&out, version).responses[0].partitions[0]
            .records
            .clone()
            .unwrap();
        let whole = java_batches(&shown).unwrap();
        assert_eq!(whole, vec![&set[..first_len]]);
        assert_eq!(
            i64::from_be_bytes(shown[first_len..first_len + 8].try_into().unwrap()),
            2,
            "the filler names the batch left for later"
        );
        // The first batch itself outgrows the set: the partition reads nothing this time.
        let grow_first = |b: &[u8]| (b[7] == 0).then(|| batch(0, 2, &[b'z'; 400]));
        let (out, r, _) = stream(
            &frame,
            version,
            64 << 10,
            false,
            &mut Map(grow_first, false),
        )
        .await;
        assert_eq!(
            r.unwrap(),
            Streamed {
                walked: true,
                cut: 1,
                cut_first: true
            }
        );
        let shown = records_of(&out, version).responses[0].partitions[0]
            .records
            .clone()
            .unwrap();
        assert_eq!(shown.len(), set.len());
        assert!(java_batches(&shown).unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_brokers_partial_batch_gives_way_to_the_filler() {
    let whole = batch(0, 2, &[b'q'; 100]);
    let mut set = whole.clone();
    set.extend_from_slice(&batch(2, 5, &[b'r'; 100])[..150]);
    let frame = answer(12, &[set.clone()], &[]);
    // Nothing is changed, yet the partial batch is replaced: only the filler may end the set.
    let (out, r, _) = stream(&frame, 12, 9, false, &mut Map(|_: &[u8]| None, false)).await;
    assert_eq!(r.unwrap().cut, 0);
    let shown = records_of(&out, 12).responses[0].partitions[0]
        .records
        .clone()
        .unwrap();
    assert_eq!(shown.len(), set.len());
    assert_eq!(java_batches(&shown).unwrap(), vec![&whole[..]]);
    assert_eq!(&shown[..whole.len()], &whole[..]);
}

#[tokio::test]
async fn a_body_off_the_layout_goes_on_as_it_came_and_a_short_one_is_an_upstream_error() {
    let mut frame = 9i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xff; 64]);
    let (out, r, topics) = stream(&frame, 12, 4, true, &mut Map(|_: &[u8]| None, false)).await;
    assert_eq!(out, frame);
    assert!(!r.unwrap().walked);
    assert!(topics.is_empty());
    // The upstream closes in the middle: an error, never a made-up end.
    let whole = answer(12, &[batch(0, 1, b"v")], &[]);
    let mut data = (whole.len() as i32 + 10).to_be_bytes().to_vec();
    data.extend_from_slice(&whole);
    let mut reader = FrameReader::new(
        Chunked {
            data,
            at: 0,
            step: 3,
        },
        1 << 20,
    );
    let (size, head) = reader.read_head(4).await.unwrap().unwrap();
    let mut out = Vec::new();
    let r = stream_fetch(
        &mut reader,
        &mut out,
        size - head.len(),
        12,
        false,
        &mut NoEdit,
        |_, _, _, _| {},
    )
    .await;
    assert!(
        matches!(r, Err(StreamError::Upstream(FrameError::Truncated { .. }))),
        "{r:?}"
    );
}

#[test]
fn every_filler_length_reads_as_a_partial_batch() {
    for n in 0..300 {
        let mut out = vec![7u8];
        filler(n, 42, &mut out);
        assert_eq!(out.len(), n + 1);
        assert_eq!(java_batches(&out[1..]), Ok(vec![]), "{n} bytes");
        assert!(
            crate::protocol::records::batches(&out[1..]).all(|b| b.is_err()),
            "{n} bytes"
        );
    }
}
