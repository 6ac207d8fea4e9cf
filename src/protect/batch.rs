//! Rewriting the record values of v2 record batches, keeping everything else of each batch:
//! base offset, partition leader epoch, attributes (transactional and control flags, timestamp
//! type), last offset delta, timestamps, producer id, epoch and base sequence, and per record
//! its attributes, deltas, key and every header byte for byte. The length and the CRC-32C are
//! computed anew.
//!
//! A batch whose values all come back unchanged is returned as `None`: the caller keeps the
//! original bytes. Control batches are never touched.

use std::io::Write;

use crate::protocol::records::{
    put_bytes, put_varlong, Codec, DeflatedBatch, RecordError, XERIAL_MAGIC,
};

const HEADER_LEN: usize = 61;

/// How a rewritten batch is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// With the codec it came with (and, for snappy, the same framing): what a produce needs,
    /// so the broker stores what the producer chose.
    SameCodec,
    /// Uncompressed: what a fetch answer may carry (each batch says its own codec), saving the
    /// compression on the way out.
    Uncompressed,
}

/// A record value's edit: writes the new value into the (empty) buffer it is handed and says
/// `true`, or says `false` to keep the value; an error refuses the record. The buffer is reused
/// from record to record.
pub type ValueEdit<'a, E> = dyn FnMut(&[u8], &mut Vec<u8>) -> Result<bool, E> + 'a;

/// Why a batch could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E> {
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: &'static str, reason: String },
    /// The value edit refused a record.
    #[error("record {index}: {error}")]
    Edit { index: usize, error: E },
}

/// The batch with each record's value replaced by `edit(value)` where it returns `Some`.
/// `max_inflate` caps the decompressed size.
pub fn rewrite_batch<E>(
    batch: &DeflatedBatch<'_>,
    max_inflate: usize,
    output: Output,
    edit: &mut ValueEdit<'_, E>,
) -> Result<Option<Vec<u8>>, BatchError<E>> {
    let mut out = Vec::new();
    Ok(rewrite_batch_into(batch, max_inflate, output, edit, &mut out)?.then_some(out))
}

/// As [`rewrite_batch`], appending the new batch to `out`; `false` (and `out` as it was) when
/// no value changed. Uncompressed, the records are written straight into `out`.
pub fn rewrite_batch_into<E>(
    batch: &DeflatedBatch<'_>,
    max_inflate: usize,
    output: Output,
    edit: &mut ValueEdit<'_, E>,
    out: &mut Vec<u8>,
) -> Result<bool, BatchError<E>> {
    if batch.is_control() {
        return Ok(false);
    }
    let inflated = batch.inflate(max_inflate)?;
    let codec = batch.codec()?;
    let start = out.len();
    let direct = output == Output::Uncompressed || codec == Codec::None;
    let mut scratch = Vec::new();
    if direct {
        out.reserve(HEADER_LEN + inflated.len() + inflated.len() / 4);
        out.extend_from_slice(&batch.bytes[..HEADER_LEN]);
    } else {
        scratch.reserve(inflated.len() + inflated.len() / 4);
    }
    let body = if direct { &mut *out } else { &mut scratch };
    let mut changed = false;
    let mut new_value = Vec::new();
    for (index, record) in inflated.iter().enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.truncate(start);
                return Err(e.into());
            }
        };
        new_value.clear();
        let edited = match record.value {
            Some(v) => match edit(v, &mut new_value) {
                Ok(e) => e,
                Err(error) => {
                    out.truncate(start);
                    return Err(BatchError::Edit { index, error });
                }
            },
            None => false,
        };
        changed |= edited;
        let value = if edited {
            Some(&new_value[..])
        } else {
            record.value
        };
        let (header_count, headers) = record.raw_headers();
        // The length first, computed, then the fields.
        let len = 1
            + varlong_len(record.timestamp_delta)
            + varlong_len(record.offset_delta as i64)
            + bytes_len(record.key)
            + bytes_len(value)
            + varlong_len(header_count as i64)
            + headers.len();
        put_varlong(body, len as i64);
        body.push(0); // record attributes (unused, always 0)
        put_varlong(body, record.timestamp_delta);
        put_varlong(body, record.offset_delta as i64);
        put_bytes(body, record.key);
        put_bytes(body, value);
        put_varlong(body, header_count as i64);
        body.extend_from_slice(headers);
    }
    if !changed {
        out.truncate(start);
        return Ok(false);
    }
    let codec = if direct {
        Codec::None
    } else {
        let xerial = batch.payload.starts_with(XERIAL_MAGIC);
        let payload = compress(codec, xerial, &scratch)?;
        out.extend_from_slice(&batch.bytes[..HEADER_LEN]);
        out.extend_from_slice(&payload);
        codec
    };
    finish(batch, codec, &mut out[start..]);
    Ok(true)
}

/// The encoded size of a zigzag varint.
fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

/// The encoded size of a record's nullable bytes field.
fn bytes_len(v: Option<&[u8]>) -> usize {
    match v {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

/// A batch written as the header as sent, then its new records: its length, codec and CRC set.
fn finish(batch: &DeflatedBatch<'_>, codec: Codec, out: &mut [u8]) {
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = (batch.attributes & !0x07) | codec_bits(codec);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn codec_bits(codec: Codec) -> i16 {
    match codec {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Snappy => 2,
        Codec::Lz4 => 3,
        Codec::Zstd => 4,
    }
}

/// Compresses a records section as Kafka's clients do: gzip, snappy (xerial framing when the
/// original had it, else one raw block), LZ4 frames with independent 64 KiB blocks, zstd.
pub fn compress<E>(codec: Codec, xerial: bool, data: &[u8]) -> Result<Vec<u8>, BatchError<E>> {
    let fail = |codec: Codec| {
        move |e: std::io::Error| BatchError::Compress {
            codec: codec.name(),
            reason: e.to_string(),
        }
    };
    Ok(match codec {
        Codec::None => data.to_vec(),
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::default(),
            );
            enc.write_all(data).map_err(fail(codec))?;
            enc.finish().map_err(fail(codec))?
        }
        Codec::Snappy => {
            let mut enc = snap::raw::Encoder::new();
            if xerial {
                // Java's framing: magic, version 1, compatible version 1, then length-prefixed
                // blocks of at most 32 KiB of input.
                let mut out = Vec::with_capacity(16 + data.len());
                out.extend_from_slice(XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                for chunk in data.chunks(32 * 1024) {
                    let block = enc
                        .compress_vec(chunk)
                        .map_err(|e| fail(codec)(std::io::Error::other(e)))?;
                    out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                out
            } else {
                enc.compress_vec(data)
                    .map_err(|e| fail(codec)(std::io::Error::other(e)))?
            }
        }
        Codec::Lz4 => {
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.block_mode = lz4_flex::frame::BlockMode::Independent;
            info.block_size = lz4_flex::frame::BlockSize::Max64KB;
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(data).map_err(fail(codec))?;
            enc.finish()
                .map_err(|e| fail(codec)(std::io::Error::other(e)))?
        }
        Codec::Zstd => zstd::bulk::compress(data, 3).map_err(fail(codec))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::records::{batches, test_batch};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    fn upper(v: &[u8], out: &mut Vec<u8>) -> Result<bool, ()> {
        if v.first() != Some(&b'x') {
            return Ok(false);
        }
        out.extend(v.to_ascii_uppercase());
        Ok(true)
    }

    #[test]
    fn every_codec_round_trips_with_the_header_kept_and_a_valid_crc() {
        let headers: &[(&str, &[u8])] = &[("h", b"1"), ("g", b"2")];
        let specs: Vec<test_batch::Spec<'_>> = vec![
            (Some(b"k1"), Some(b"xvalue-one"), headers),
            (None, Some(b"keep"), &[]),
            (Some(b"k3"), None, &[]),
            (None, Some(b"xthree"), &[]),
        ];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for output in [Output::SameCodec, Output::Uncompressed] {
                let original = test_batch::encode(&specs, compression);
                let batch = batches(&original).next().unwrap().unwrap();
                let out = rewrite_batch(&batch, 1 << 20, output, &mut upper)
                    .unwrap()
                    .expect("changed");
                // The broker-side decoder (CRC checked) reads it back.
                let mut buf = bytes::Bytes::from(out.clone());
                let decoded = RecordBatchDecoder::decode(&mut buf).unwrap();
                let values: Vec<Option<Vec<u8>>> = decoded
                    .records
                    .iter()
                    .map(|r| r.value.as_ref().map(|v| v.to_vec()))
                    .collect();
                assert_eq!(
                    values,
                    vec![
                        Some(b"XVALUE-ONE".to_vec()),
                        Some(b"keep".to_vec()),
                        None,
                        Some(b"XTHREE".to_vec())
                    ],
                    "{compression:?} {output:?}"
                );
                let again = batches(&out).next().unwrap().unwrap();
                assert_eq!(again.producer_id, batch.producer_id);
                assert_eq!(again.producer_epoch, batch.producer_epoch);
                assert_eq!(again.base_sequence, batch.base_sequence);
                assert_eq!(again.base_offset, batch.base_offset);
                assert_eq!(again.base_timestamp, batch.base_timestamp);
                assert_eq!(again.records_count, batch.records_count);
                // Everything from the base offset to the CRC but the length, and from the last
                // offset delta to the record count, is as sent.
                assert_eq!(out[..8], original[..8]);
                assert_eq!(out[12..17], original[12..17]);
                assert_eq!(out[23..61], original[23..61]);
                let want_codec = match output {
                    Output::SameCodec => batch.attributes & 7,
                    Output::Uncompressed => 0,
                };
                assert_eq!(again.attributes & 7, want_codec);
                let inflated = again.inflate(1 << 20).unwrap();
                let first = inflated.iter().next().unwrap().unwrap();
                let hs: Vec<_> = first.headers().collect();
                assert_eq!(
                    hs,
                    vec![(&b"h"[..], Some(&b"1"[..])), (&b"g"[..], Some(&b"2"[..]))]
                );
            }
        }
    }

    #[test]
    fn encoded_sizes_are_what_the_encoder_writes() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -65,
            8191,
            8192,
            i64::MAX,
            i64::MIN,
            1 << 40,
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(varlong_len(v), buf.len(), "{v}");
        }
        for b in [None, Some(&b""[..]), Some(&[7u8; 300][..])] {
            let mut buf = Vec::new();
            put_bytes(&mut buf, b);
            assert_eq!(bytes_len(b), buf.len());
        }
    }

    #[test]
    fn repeated_headers_are_kept_in_order() {
        use crate::own_client::batch::{encode, OwnedRecord, Stamp};
        let b = |s: &str| bytes::Bytes::copy_from_slice(s.as_bytes());
        let original = encode(
            &[OwnedRecord {
                key: None,
                value: Some(b("xv")),
                headers: vec![
                    (b("h"), Some(b("1"))),
                    (b("h"), Some(b("2"))),
                    (b("n"), None),
                ],
                timestamp: 5,
            }],
            Stamp {
                producer_id: 3,
                producer_epoch: 0,
                base_sequence: 9,
            },
        );
        let batch = batches(&original).next().unwrap().unwrap();
        let out = rewrite_batch(&batch, 1 << 20, Output::SameCodec, &mut upper)
            .unwrap()
            .unwrap();
        let again = batches(&out).next().unwrap().unwrap();
        let inflated = again.inflate(1 << 20).unwrap();
        let r = inflated.iter().next().unwrap().unwrap();
        assert_eq!(r.value, Some(&b"XV"[..]));
        let hs: Vec<_> = r.headers().collect();
        assert_eq!(
            hs,
            vec![
                (&b"h"[..], Some(&b"1"[..])),
                (&b"h"[..], Some(&b"2"[..])),
                (&b"n"[..], None)
            ]
        );
    }

    #[test]
    fn unchanged_batches_and_control_batches_are_left_as_they_are() {
        let specs: Vec<test_batch::Spec<'_>> = vec![(None, Some(b"keep"), &[])];
        let plain = test_batch::encode(&specs, Compression::Gzip);
        let batch = batches(&plain).next().unwrap().unwrap();
        assert!(
            rewrite_batch(&batch, 1 << 20, Output::SameCodec, &mut upper)
                .unwrap()
                .is_none()
        );
        let specs: Vec<test_batch::Spec<'_>> = vec![(None, Some(b"xcontrol"), &[])];
        let control = test_batch::encode_as(&specs, Compression::None, 7, true);
        let batch = batches(&control).next().unwrap().unwrap();
        assert!(
            rewrite_batch(&batch, 1 << 20, Output::SameCodec, &mut upper)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_edit_error_names_the_record_and_an_oversized_batch_is_refused() {
        let specs: Vec<test_batch::Spec<'_>> =
            vec![(None, Some(b"ok"), &[]), (None, Some(b"bad"), &[])];
        let raw = test_batch::encode(&specs, Compression::Zstd);
        let batch = batches(&raw).next().unwrap().unwrap();
        let mut refuse =
            |v: &[u8], _: &mut Vec<u8>| if v == b"bad" { Err("no") } else { Ok(false) };
        match rewrite_batch(&batch, 1 << 20, Output::SameCodec, &mut refuse) {
            Err(BatchError::Edit {
                index: 1,
                error: "no",
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rewrite_batch(&batch, 4, Output::SameCodec, &mut upper),
            Err(BatchError::Records(RecordError::TooLarge(4)))
        ));
    }
}
