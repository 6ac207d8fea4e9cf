//! Kafka record batches (magic v2), parsed strictly and without per-record allocation.
//!
//! Two stages, as two types, so validation can only ever see decompressed records:
//!
//! - [`DeflatedBatch`]: the 61-byte batch header and the (possibly compressed) records section,
//!   borrowed from the produce request. Batch-level facts (codec, producer id) come from here.
//! - [`InflatedRecords`]: the records section after decompression, borrowed when the batch was not
//!   compressed. [`InflatedRecords::iter`] yields [`RecordView`]s that borrow key, value and headers.
//!
//! Parsing is strict so that meshgate validates exactly what the broker will store: the batch
//! length must fit the input, every record's length prefix must match its contents, and the record
//! count in the header must equal the records present. Decompression is capped, so a small
//! compressed batch cannot expand without bound.

use std::borrow::Cow;
use std::io::Read;

const BATCH_HEADER_LEN: usize = 61;
pub const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record batch truncated: {0}")]
    Truncated(&'static str),
    #[error("record batch magic {0} is not supported (only v2)")]
    Magic(i8),
    #[error("unknown compression codec {0}")]
    Codec(u8),
    #[error("{codec} data does not decompress: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error("decompressed batch exceeds the {0}-byte limit")]
    TooLarge(usize),
    #[error("malformed record {index}: {reason}")]
    Record { index: usize, reason: &'static str },
    #[error("batch header says {declared} records but holds {found}")]
    Count { declared: i32, found: usize },
    #[error("the request's records exceed the gateway's per-request budget of {bytes} inflated bytes and {records} records")]
    RequestBudget { bytes: usize, records: u64 },
}

/// What the batches of one request may inflate to, all together.
///
/// The per-batch cap alone does not bound a request: a 1 MiB Produce request can hold hundreds
/// of zstd batches that each inflate to the cap. Every batch judged draws on the budget (its
/// inflated size, or its size as sent when it is not compressed), and a batch that would
/// overdraw it is refused before or while it is decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateBudget {
    pub bytes: usize,
    pub records: u64,
    limit: (usize, u64),
}

impl InflateBudget {
    pub fn new(bytes: usize, records: u64) -> Self {
        Self {
            bytes,
            records,
            limit: (bytes, records),
        }
    }

    fn exhausted(&self) -> RecordError {
        RecordError::RequestBudget {
            bytes: self.limit.0,
            records: self.limit.1,
        }
    }
}

/// A compression codec, from the low three bits of the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            _ => return None,
        })
    }
}

/// A record batch as sent: header fields, and the records section still compressed.
#[derive(Debug, Clone)]
pub struct DeflatedBatch<'a> {
    pub base_offset: i64,
    pub magic: i8,
    pub attributes: i16,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
    /// The first record's timestamp; each record's is this plus its delta.
    pub base_timestamp: i64,
    /// The records section as sent (compressed when `codec() != None`).
    pub payload: &'a [u8],
    /// The whole batch, header included.
    pub bytes: &'a [u8],
}

impl<'a> DeflatedBatch<'a> {
    pub fn codec(&self) -> Result<Codec, RecordError> {
        Ok(match self.attributes & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => return Err(RecordError::Codec(other as u8)),
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Decompresses the records section, refusing to produce more than `max_bytes`.
    pub fn inflate(&self, max_bytes: usize) -> Result<InflatedRecords<'a>, RecordError> {
        let data: Cow<'a, [u8]> = match self.codec()? {
            Codec::None => Cow::Borrowed(self.payload),
            Codec::Gzip => Cow::Owned(read_capped(
                flate2::read::GzDecoder::new(self.payload),
                max_bytes,
                "gzip",
            )?),
            Codec::Lz4 => Cow::Owned(read_capped(
                lz4_flex::frame::FrameDecoder::new(self.payload),
                max_bytes,
                "lz4",
            )?),
            Codec::Zstd => {
                let decoder =
                    zstd::stream::read::Decoder::with_buffer(self.payload).map_err(|e| {
                        RecordError::Decompress {
                            codec: "zstd",
                            reason: e.to_string(),
                        }
                    })?;
                Cow::Owned(read_capped(decoder, max_bytes, "zstd")?)
            }
            Codec::Snappy => Cow::Owned(snappy(self.payload, max_bytes)?),
        };
        Ok(InflatedRecords {
            data: match data {
                Cow::Borrowed(b) => Data::Borrowed(b),
                Cow::Owned(v) => Data::Shared(bytes::Bytes::from(v)),
            },
            declared: self.records_count,
        })
    }

    /// [`inflate`](Self::inflate) within a request's budget: at most `max_batch` bytes for this
    /// batch, and no more than the budget has left.
    pub fn inflate_within(
        &self,
        max_batch: usize,
        budget: &mut InflateBudget,
    ) -> Result<InflatedRecords<'a>, RecordError> {
        let declared = self.records_count.max(0) as u64;
        if declared > budget.records {
            return Err(budget.exhausted());
        }
        let cap = max_batch.min(budget.bytes);
        let inflated = self.inflate(cap).map_err(|e| match e {
            RecordError::TooLarge(_) if cap < max_batch => budget.exhausted(),
            e => e,
        })?;
        let size = inflated.data.len();
        if size > budget.bytes {
            // An uncompressed batch larger than what is left.
            return Err(budget.exhausted());
        }
        budget.bytes -= size;
        budget.records -= declared;
        Ok(inflated)
    }
}

fn read_capped<R: Read>(r: R, max: usize, codec: &'static str) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    let read =
        r.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| RecordError::Decompress {
                codec,
                reason: e.to_string(),
            })?;
    if read > max {
        return Err(RecordError::TooLarge(max));
    }
    Ok(out)
}

/// Kafka's Java client frames snappy the xerial way (a magic header, then length-prefixed raw
/// blocks); librdkafka and others may send one raw block. Both are accepted.
fn snappy(data: &[u8], max: usize) -> Result<Vec<u8>, RecordError> {
    let err = |reason: String| RecordError::Decompress {
        codec: "snappy",
        reason,
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut decode_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let len = snap::raw::decompress_len(block).map_err(|e| err(e.to_string()))?;
        if out.len() + len > max {
            return Err(RecordError::TooLarge(max));
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    if data.starts_with(XERIAL_MAGIC) {
        let mut rest = data
            .get(16..)
            .ok_or_else(|| err("short xerial header".into()))?;
        while !rest.is_empty() {
            let len_bytes: [u8; 4] = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| err("short xerial block length".into()))?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            let block = rest
                .get(4..4 + len)
                .ok_or_else(|| err("short xerial block".into()))?;
            decode_block(block, &mut out)?;
            rest = &rest[4 + len..];
        }
    } else {
        decode_block(data, &mut out)?;
    }
    Ok(out)
}

/// Iterates the batches of a partition's `records` field.
pub fn batches(mut input: &[u8]) -> impl Iterator<Item = Result<DeflatedBatch<'_>, RecordError>> {
    std::iter::from_fn(move || {
        if input.is_empty() {
            return None;
        }
        match parse_batch(input) {
            Ok((batch, rest)) => {
                input = rest;
                Some(Ok(batch))
            }
            Err(e) => {
                input = &[];
                Some(Err(e))
            }
        }
    })
}

fn parse_batch(input: &[u8]) -> Result<(DeflatedBatch<'_>, &[u8]), RecordError> {
    if input.len() < BATCH_HEADER_LEN {
        return Err(RecordError::Truncated("shorter than a batch header"));
    }
    let be_i16 = |at: usize| i16::from_be_bytes([input[at], input[at + 1]]);
    let be_i32 = |at: usize| i32::from_be_bytes(input[at..at + 4].try_into().expect("4 bytes"));
    let be_i64 = |at: usize| i64::from_be_bytes(input[at..at + 8].try_into().expect("8 bytes"));
    let batch_length = be_i32(8);
    let magic = input[16] as i8;
    if magic != 2 {
        return Err(RecordError::Magic(magic));
    }
    let total = usize::try_from(batch_length)
        .ok()
        .and_then(|l| l.checked_add(12))
        .filter(|t| *t >= BATCH_HEADER_LEN)
        .ok_or(RecordError::Truncated("negative or short batch length"))?;
    if input.len() < total {
        return Err(RecordError::Truncated("batch length exceeds the data"));
    }
    let batch = DeflatedBatch {
        base_offset: be_i64(0),
        magic,
        attributes: be_i16(21),
        producer_id: be_i64(43),
        producer_epoch: be_i16(51),
        base_sequence: be_i32(53),
        records_count: be_i32(57),
        base_timestamp: be_i64(27),
        payload: &input[BATCH_HEADER_LEN..total],
        bytes: &input[..total],
    };
    Ok((batch, &input[total..]))
}

/// A batch's records, decompressed.
#[derive(Clone)]
pub struct InflatedRecords<'a> {
    data: Data<'a>,
    declared: i32,
}

/// The records section: borrowed from the request when it was not compressed, else the
/// decompressed bytes (shared, so a request's inflated batches can be kept and read again
/// without decompressing twice).
#[derive(Clone)]
enum Data<'a> {
    Borrowed(&'a [u8]),
    Shared(bytes::Bytes),
}

impl std::ops::Deref for Data<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Borrowed(b) => b,
            Data::Shared(b) => b,
        }
    }
}

impl InflatedRecords<'_> {
    /// An owned copy when the records were decompressed (sharing the bytes), `None` when they
    /// are borrowed from the request.
    pub fn shared(&self) -> Option<InflatedRecords<'static>> {
        match &self.data {
            Data::Borrowed(_) => None,
            Data::Shared(b) => Some(InflatedRecords {
                data: Data::Shared(b.clone()),
                declared: self.declared,
            }),
        }
    }

    /// Bytes of the records section after decompression.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The records, in order. The last item is an error if the data does not hold exactly the
    /// declared number of well-formed records.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            rest: &self.data,
            index: 0,
            declared: self.declared,
            done: false,
        }
    }
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Encoded size of the record (its length prefix).
    pub size: usize,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's offset, relative to its batch's base offset.
    pub offset_delta: i32,
    /// The record's timestamp, relative to its batch's base timestamp.
    pub timestamp_delta: i64,
    headers: &'a [u8],
    header_count: usize,
}

impl<'a> RecordView<'a> {
    /// Header (key, value) pairs, in order. Already validated when the record was parsed.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut rest = self.headers;
        (0..self.header_count).filter_map(move |_| {
            let k = read_bytes(&mut rest).ok()??;
            let v = read_bytes(&mut rest).ok()?;
            Some((k, v))
        })
    }

    /// The header count and the headers' encoded bytes, as written: for re-encoding a record
    /// with every header kept byte for byte.
    pub fn raw_headers(&self) -> (usize, &'a [u8]) {
        (self.header_count, self.headers)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers().any(|(k, _)| k == name.as_bytes())
    }
}

pub struct RecordIter<'a> {
    rest: &'a [u8],
    index: usize,
    declared: i32,
    done: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.rest.is_empty() {
            self.done = true;
            return (self.index as i64 != self.declared as i64).then_some(Err(
                RecordError::Count {
                    declared: self.declared,
                    found: self.index,
                },
            ));
        }
        let index = self.index;
        let parsed =
            parse_record(&mut self.rest).map_err(|reason| RecordError::Record { index, reason });
        match parsed {
            Ok(r) => {
                self.index += 1;
                if self.index as i64 > self.declared as i64 {
                    self.done = true;
                    return Some(Err(RecordError::Count {
                        declared: self.declared,
                        found: self.index,
                    }));
                }
                Some(Ok(r))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_record<'a>(input: &mut &'a [u8]) -> Result<RecordView<'a>, &'static str> {
    let len = read_varint(input)?;
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    if input.len() < len {
        return Err("length exceeds the batch");
    }
    let (mut body, rest) = input.split_at(len);
    *input = rest;
    let _attributes = read_u8(&mut body)?;
    let timestamp_delta = read_varlong(&mut body)?;
    let offset_delta = read_varint(&mut body)?;
    let key = read_bytes(&mut body)?;
    let value = read_bytes(&mut body)?;
    let header_count = read_varint(&mut body)?;
    let header_count = usize::try_from(header_count).map_err(|_| "negative header count")?;
    let headers = body;
    for _ in 0..header_count {
        read_bytes(&mut body)?.ok_or("null header key")?;
        read_bytes(&mut body)?;
    }
    if !body.is_empty() {
        return Err("bytes left after the headers");
    }
    Ok(RecordView {
        size: len,
        key,
        value,
        offset_delta,
        timestamp_delta,
        headers,
        header_count,
    })
}

fn read_u8(b: &mut &[u8]) -> Result<u8, &'static str> {
    let (&first, rest) = b.split_first().ok_or("truncated")?;
    *b = rest;
    Ok(first)
}

fn read_varlong(b: &mut &[u8]) -> Result<i64, &'static str> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = read_u8(b)?;
        raw |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err("varint too long")
}

fn read_varint(b: &mut &[u8]) -> Result<i32, &'static str> {
    let v = read_varlong(b)?;
    i32::try_from(v).map_err(|_| "varint out of range")
}

fn read_bytes<'a>(b: &mut &'a [u8]) -> Result<Option<&'a [u8]>, &'static str> {
    let len = read_varint(b)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if b.len() < len {
        return Err("field length exceeds the record");
    }
    let (v, rest) = b.split_at(len);
    *b = rest;
    Ok(Some(v))
}

/// Writes a zigzag varint, as record fields are encoded.
pub fn put_varlong(buf: &mut impl bytes::BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// Writes a record's nullable bytes field (a varint length, -1 for null, then the bytes).
pub fn put_bytes(buf: &mut impl bytes::BufMut, v: Option<&[u8]>) {
    match v {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

/// Test support: record batches as an idempotent producer writes them (producer id 7, one
/// sequence per record), for this module's tests and the fuzz seed writer.
#[cfg(test)]
pub(crate) mod test_batch {
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// (key, value, headers) of one record.
    pub type Spec<'a> = (
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        &'a [(&'a str, &'a [u8])],
    );

    pub fn encode(records: &[Spec<'_>], compression: Compression) -> Vec<u8> {
        encode_as(records, compression, 7, false)
    }

    /// As `encode`, with the producer id (-1: not idempotent, no sequence) and the control flag
    /// given.
    pub fn encode_as(
        records: &[Spec<'_>],
        compression: Compression,
        producer_id: i64,
        control: bool,
    ) -> Vec<u8> {
        let idempotent = producer_id >= 0;
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v, h))| Record {
                transactional: false,
                control,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: if idempotent { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if idempotent { i as i32 } else { -1 },
                timestamp: 1_700_000_000_000,
                key: k.map(bytes::Bytes::copy_from_slice),
                value: v.map(bytes::Bytes::copy_from_slice),
                headers: h
                    .iter()
                    .map(|(hk, hv)| {
                        (
                            StrBytes::from_string(hk.to_string()),
                            Some(bytes::Bytes::copy_from_slice(hv)),
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::Compression;

    /// (key, value, headers) of one test record.
    type Spec<'a> = (Option<&'a str>, Option<&'a str>, &'a [(&'a str, &'a str)]);
    /// (key, value, header names) as read back.
    type ReadBack = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<String>);

    fn encode(records: &[Spec<'_>], compression: Compression) -> Vec<u8> {
        let headers: Vec<Vec<(&str, &[u8])>> = records
            .iter()
            .map(|(_, _, h)| h.iter().map(|(k, v)| (*k, v.as_bytes())).collect())
            .collect();
        let specs: Vec<test_batch::Spec<'_>> = records
            .iter()
            .zip(&headers)
            .map(|((k, v, _), h)| (k.map(str::as_bytes), v.map(str::as_bytes), &h[..]))
            .collect();
        test_batch::encode(&specs, compression)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<ReadBack>, RecordError> {
        let mut out = Vec::new();
        for batch in batches(bytes) {
            let batch = batch?;
            let inflated = batch.inflate(1 << 20)?;
            for r in inflated.iter() {
                let r = r?;
                out.push((
                    r.key.map(|k| k.to_vec()),
                    r.value.map(|v| v.to_vec()),
                    r.headers()
                        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                        .collect(),
                ));
            }
        }
        Ok(out)
    }

    #[test]
    fn every_codec_round_trips_records_keys_and_headers() {
        let input: &[Spec<'_>] = &[
            (Some("k1"), Some("{\"a\":1}"), &[("trace-id", "t1")]),
            (None, Some("v2"), &[]),
            (Some("k3"), None, &[("x", "1"), ("trace-id", "t3")]),
        ];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encode(input, compression);
            let batch = batches(&bytes).next().unwrap().unwrap();
            assert_eq!(batch.producer_id, 7);
            assert_eq!(batch.records_count, 3);
            let got = read_all(&bytes).unwrap();
            assert_eq!(got.len(), 3, "{compression:?}");
            assert_eq!(got[0].0.as_deref(), Some(&b"k1"[..]));
            assert_eq!(got[1].0, None);
            assert_eq!(got[2].1, None);
            assert_eq!(got[2].2, vec!["x".to_string(), "trace-id".to_string()]);
        }
    }

    #[test]
    fn a_request_budget_bounds_many_compressed_batches_together() {
        // Each batch inflates to about 64 KiB, well under the per-batch cap; ten of them
        // overdraw a 256 KiB request budget on the fourth or fifth.
        let zeros = "0".repeat(64 * 1024);
        let one = encode(&[(None, Some(&zeros), &[])], Compression::Zstd);
        assert!(one.len() < 1024, "highly compressible");
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 10).collect();
        let mut budget = InflateBudget::new(256 * 1024, 1_000);
        let mut inflated = 0;
        let mut refused = None;
        for batch in batches(&many) {
            match batch.unwrap().inflate_within(64 << 20, &mut budget) {
                Ok(r) => inflated += r.len(),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(inflated <= 256 * 1024, "never past the budget: {inflated}");
        assert!(matches!(
            refused,
            Some(RecordError::RequestBudget {
                bytes: 262_144,
                records: 1_000
            })
        ));
    }

    #[test]
    fn a_request_budget_counts_records_and_uncompressed_bytes() {
        let one: Spec<'_> = (None, Some("v"), &[]);
        let bytes = encode(&[one; 10], Compression::None);
        let batch = batches(&bytes).next().unwrap().unwrap();
        let mut budget = InflateBudget::new(1 << 20, 25);
        batch.inflate_within(1 << 20, &mut budget).unwrap();
        batch.inflate_within(1 << 20, &mut budget).unwrap();
        assert_eq!(budget.records, 5);
        assert!(budget.bytes < 1 << 20, "uncompressed bytes count too");
        assert!(matches!(
            batch.inflate_within(1 << 20, &mut budget),
            Err(RecordError::RequestBudget { .. })
        ));
        let mut tight = InflateBudget::new(10, 100);
        assert!(matches!(
            batch.inflate_within(1 << 20, &mut tight),
            Err(RecordError::RequestBudget { .. })
        ));
    }

    #[test]
    fn codec_names_come_from_the_attributes() {
        for (c, name) in [
            (Compression::None, "none"),
            (Compression::Gzip, "gzip"),
            (Compression::Snappy, "snappy"),
            (Compression::Lz4, "lz4"),
            (Compression::Zstd, "zstd"),
        ] {
            let bytes = encode(&[(None, Some("v"), &[])], c);
            let b = batches(&bytes).next().unwrap().unwrap();
            assert_eq!(b.codec().unwrap().name(), name);
            assert_eq!(Codec::from_name(name), Some(b.codec().unwrap()));
        }
    }

    #[test]
    fn a_count_that_disagrees_with_the_records_is_refused() {
        let mut bytes = encode(
            &[(None, Some("a"), &[]), (None, Some("b"), &[])],
            Compression::None,
        );
        bytes[60] = 3; // records_count = 3, two present
        assert!(matches!(
            read_all(&bytes),
            Err(RecordError::Count {
                declared: 3,
                found: 2
            })
        ));
        bytes[60] = 1; // one declared, two present
        assert!(matches!(
            read_all(&bytes),
            Err(RecordError::Count {
                declared: 1,
                found: 2
            })
        ));
    }

    #[test]
    fn truncation_and_bad_magic_are_errors_never_panics() {
        let bytes = encode(
            &[(Some("k"), Some("value"), &[("h", "v")])],
            Compression::None,
        );
        for cut in 0..bytes.len() {
            let _ = read_all(&bytes[..cut]);
        }
        let mut bad = bytes.clone();
        bad[16] = 1;
        assert_eq!(read_all(&bad).unwrap_err(), RecordError::Magic(1));
        // Flip every byte of the records section in turn: errors or records, never a panic.
        for i in BATCH_HEADER_LEN..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = read_all(&b);
        }
    }

    #[test]
    fn decompression_is_capped() {
        let big = "x".repeat(100_000);
        let bytes = encode(&[(None, Some(big.as_str()), &[])], Compression::Gzip);
        let batch = batches(&bytes).next().unwrap().unwrap();
        assert!(matches!(
            batch.inflate(10_000),
            Err(RecordError::TooLarge(10_000))
        ));
        assert!(batch.inflate(200_000).is_ok());
    }
}
