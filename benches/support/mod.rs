//! What the criterion benches share: record batches as an idempotent producer writes them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One v2 batch of these (key, value) records, as an idempotent producer writes it (producer
/// id 1, epoch 0, one sequence number per record, create time).
pub fn batch(
    records: impl IntoIterator<Item = (Option<Bytes>, Bytes)>,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_764_000_000_000,
            key,
            value: Some(value),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("a batch encodes");
    buf.freeze()
}
