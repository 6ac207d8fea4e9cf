//! Record batches that meshgate writes in its own name (magic 2, uncompressed, idempotent).
//!
//! Written here rather than with kafka-protocol's encoder because its records keep headers in a
//! map: a record with a repeated header key would lose one, and a dead-lettered record must keep
//! every header as it was sent.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::records::{put_bytes, put_varlong, RecordView};

/// One record to write: as it was read, plus meshgate's own headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// In order, repeats kept.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// Milliseconds since the epoch (create time).
    pub timestamp: i64,
}

impl OwnedRecord {
    /// A record as read from a batch with `base_timestamp`, every header kept, its bytes owned
    /// by `own` (a copy, or a slice of the buffer the record was read from).
    pub fn from_view(
        r: &RecordView<'_>,
        base_timestamp: i64,
        own: impl Fn(&[u8]) -> Bytes,
    ) -> Self {
        OwnedRecord {
            key: r.key.map(&own),
            value: r.value.map(&own),
            headers: r.headers().map(|(k, v)| (own(k), v.map(&own))).collect(),
            timestamp: base_timestamp.saturating_add(r.timestamp_delta),
        }
    }
}

/// The idempotent producer's stamp on a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Encodes `records` (at least one) as one batch.
pub fn encode(records: &[OwnedRecord], stamp: Stamp) -> Bytes {
    let base_timestamp = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    let mut record = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        record.clear();
        record.put_u8(0); // attributes
        put_varlong(&mut record, r.timestamp - base_timestamp);
        put_varlong(&mut record, i as i64);
        put_bytes(&mut record, r.key.as_deref());
        put_bytes(&mut record, r.value.as_deref());
        put_varlong(&mut record, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut record, Some(k));
            put_bytes(&mut record, v.as_deref());
        }
        put_varlong(&mut body, record.len() as i64);
        body.put_slice(&record);
    }
    // From the attributes on, covered by the CRC.
    let mut checked = BytesMut::with_capacity(40 + body.len());
    checked.put_i16(0); // attributes: uncompressed, create time, not transactional
    checked.put_i32(records.len().saturating_sub(1) as i32);
    checked.put_i64(base_timestamp);
    checked.put_i64(max_timestamp);
    checked.put_i64(stamp.producer_id);
    checked.put_i16(stamp.producer_epoch);
    checked.put_i32(stamp.base_sequence);
    checked.put_i32(records.len() as i32);
    checked.put_slice(&body);
    let crc = crc32c::crc32c(&checked);
    let mut out = BytesMut::with_capacity(21 + checked.len());
    out.put_i64(0); // base offset
    out.put_i32((4 + 1 + 4 + checked.len()) as i32); // batch length: from the leader epoch on
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2); // magic
    out.put_u32(crc);
    out.put_slice(&checked);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::records::batches;

    fn rec(
        key: Option<&str>,
        value: Option<&str>,
        headers: &[(&str, Option<&str>)],
        ts: i64,
    ) -> OwnedRecord {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        OwnedRecord {
            key: key.map(b),
            value: value.map(b),
            headers: headers.iter().map(|(k, v)| (b(k), v.map(b))).collect(),
            timestamp: ts,
        }
    }

    #[test]
    fn a_batch_reads_back_with_every_field_and_a_valid_crc() {
        let records = vec![
            rec(
                Some("k1"),
                Some("v1"),
                &[("a", Some("1")), ("a", Some("2")), ("n", None)],
                1_700_000_000_500,
            ),
            rec(None, None, &[], 1_700_000_000_000),
        ];
        let stamp = Stamp {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 17,
        };
        let bytes = encode(&records, stamp);
        // Our own reader: header fields, records, repeated headers.
        let batch = batches(&bytes).next().unwrap().unwrap();
        assert_eq!(batch.bytes.len(), bytes.len());
        assert_eq!(
            (batch.producer_id, batch.producer_epoch, batch.base_sequence),
            (42, 3, 17)
        );
        assert_eq!(batch.records_count, 2);
        assert_eq!(batch.base_timestamp, 1_700_000_000_000);
        let inflated = batch.inflate(1 << 20).unwrap();
        let read: Vec<_> = inflated.iter().map(Result::unwrap).collect();
        assert_eq!(read[0].key, Some(&b"k1"[..]));
        assert_eq!(read[0].value, Some(&b"v1"[..]));
        assert_eq!(
            batch.base_timestamp + read[0].timestamp_delta,
            1_700_000_000_500
        );
        let headers: Vec<_> = read[0].headers().collect();
        assert_eq!(
            headers,
            vec![
                (&b"a"[..], Some(&b"1"[..])),
                (&b"a"[..], Some(&b"2"[..])),
                (&b"n"[..], None)
            ]
        );
        assert_eq!(
            (read[1].key, read[1].value, read[1].offset_delta),
            (None, None, 1)
        );
        // kafka-protocol's decoder checks the CRC.
        let mut buf = bytes.clone();
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.records[0].sequence, 17);
        assert_eq!(decoded.records[1].sequence, 18);
    }
}
