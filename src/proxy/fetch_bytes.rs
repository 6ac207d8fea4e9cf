//! Attributing fetched bytes to data products, for `meshgate_bytes_total{direction="out"}`.
//!
//! Only when contracts are in force: each Fetch response is walked (not decoded: nothing is
//! copied or allocated per partition) to sum the record bytes of each topic; a contract topic's
//! bytes count under that topic and the rest of the frame under `_other`. Fetch v13+ names topics
//! by id; ids are learned from Metadata responses passing through (`Gateway::topic_ids`).
//!
//! The walk skips every tagged field, whatever its tag: tansu 0.6.0 sends `node_endpoints` (tag 0)
//! in Fetch v15 responses, which the protocol defines only from v16 and which strict decoders
//! refuse.

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use super::Gateway;
use crate::generation::Generation;
pub use crate::protocol::fetch_walk::TopicRef;
use crate::protocol::fetch_walk::{walk_fetch, FetchEvent};
use crate::protocol::header::split_response;

/// Whether `count_response` reads an answer of this API (rather than only counting its size):
/// Fetch answers while contracts are in force or on a partner zone's listener.
pub fn reads_answer(gw: &Gateway, api_key: i16) -> bool {
    api_key == ApiKey::Fetch as i16
        && (gw.zone.is_some() || !gw.policies.current().contracts.is_empty())
}

/// Counts one upstream response frame (without its size prefix) as bytes out; for a Fetch
/// answer, also notes for each contract topic in it the partitions' high watermarks and that
/// the connection's principal read it (`usage`). A streamed answer is counted as it is walked,
/// with [`FetchAccount`] directly.
pub fn count_response(
    gw: &Gateway,
    api_key: i16,
    version: i16,
    frame: &Bytes,
    identity: &super::identity::Identity,
) {
    let total = frame.len() as u64 + 4;
    if api_key != ApiKey::Fetch as i16 {
        gw.metrics.bytes_out_other.inc_by(total);
        return;
    }
    let policies = gw.policies.current_arc();
    let mut account = FetchAccount::new(gw, &policies, identity);
    if !account.reads() {
        gw.metrics.bytes_out_other.inc_by(total);
        return;
    }
    let walked = split_response(frame, ApiKey::Fetch, version)
        .ok()
        .and_then(|(_, body)| {
            fetch_records(&body, version, |t, b, n, w| account.topic(t, b, n, w))
        });
    account.finish(total, walked.is_some());
}

/// One Fetch answer's accounting, topic by topic as its walk meets them: the partner zone's
/// bytes and records; per contract topic its bytes out, fetch requests, the principal's use and
/// the partitions' high watermarks (`usage`), and the owning team's chargeback; the rest of the
/// frame under `_other`.
pub struct FetchAccount<'a> {
    gw: &'a Gateway,
    policies: &'a Generation,
    identity: &'a super::identity::Identity,
    now: std::time::Instant,
    /// Read once, and only when a contract topic is in the answer.
    principal: Option<std::sync::Arc<str>>,
    charges: Vec<(&'a std::sync::Arc<str>, crate::chargeback::Tally)>,
    attributed: u64,
    /// The zone's (record bytes, records).
    zone: (u64, u64),
}

impl<'a> FetchAccount<'a> {
    pub fn new(
        gw: &'a Gateway,
        policies: &'a Generation,
        identity: &'a super::identity::Identity,
    ) -> Self {
        FetchAccount {
            gw,
            policies,
            identity,
            now: std::time::Instant::now(),
            principal: None,
            charges: Vec::new(),
            attributed: 0,
            zone: (0, 0),
        }
    }

    /// Whether the answer's topics are read at all: on a zone's listener or with contracts.
    pub fn reads(&self) -> bool {
        self.gw.zone.is_some() || !self.policies.contracts.is_empty()
    }

    /// Whether records must be counted (a zone's traffic): the rest needs bytes only.
    pub fn counts_records(&self) -> bool {
        self.gw.zone.is_some()
    }

    /// One topic of the answer: its record bytes, records and (partition, high watermark)s.
    pub fn topic(&mut self, topic: TopicRef<'_>, bytes: u64, records: u64, marks: &[(i32, i64)]) {
        self.zone.0 += bytes;
        self.zone.1 += records;
        if self.policies.contracts.is_empty() {
            return;
        }
        let gw = self.gw;
        let name = match topic {
            TopicRef::Name(n) => self.policies.contract_for(n),
            TopicRef::Id(id) => gw
                .topic_name(id)
                .and_then(|n| self.policies.contract_for(&n)),
        };
        let Some(contract) = name else {
            return;
        };
        if let Some(m) = self.policies.stats(contract) {
            m.bytes_out.inc_by(bytes);
            m.fetch_requests.inc();
            self.attributed += bytes;
        }
        let usage = &gw.metrics.usage;
        let identity = self.identity;
        let principal = self.principal.get_or_insert_with(|| identity.principal());
        usage.saw_fetch(&contract.topic, principal, self.now);
        match self
            .charges
            .iter_mut()
            .find(|(t, _)| std::sync::Arc::ptr_eq(t, &contract.team))
        {
            Some((_, t)) => t.bytes_out += bytes,
            None => self.charges.push((
                &contract.team,
                crate::chargeback::Tally {
                    bytes_out: bytes,
                    fetch_requests: 1,
                    ..Default::default()
                },
            )),
        }
        for &(partition, high_watermark) in marks {
            usage.saw_end(&contract.topic, partition, high_watermark);
        }
    }

    /// The answer's end: `total` bytes on the wire (size prefix included), and whether its
    /// walk reached the end (a zone's traffic is counted only then).
    pub fn finish(self, total: u64, walked: bool) {
        let gw = self.gw;
        if let Some(zone) = &gw.zone {
            if walked {
                gw.metrics.zones.fetched(zone, self.zone.0, self.zone.1);
            }
        }
        if let Some(principal) = &self.principal {
            gw.metrics
                .charge(self.policies.chargeback_principal(principal), &self.charges);
        }
        if !walked {
            tracing::debug!("Fetch response not walkable; counted as _other");
        }
        gw.metrics
            .bytes_out_other
            .inc_by(total.saturating_sub(self.attributed));
    }
}

/// Walks a Fetch response body (v4 to v15), calling `each` with every topic's record bytes and
/// the (partition, high watermark) of its partitions answered without error. `None` when the
/// body does not follow the layout.
pub fn fetch_record_bytes<'a>(
    body: &'a [u8],
    version: i16,
    mut each: impl FnMut(TopicRef<'a>, u64, &[(i32, i64)]),
) -> Option<()> {
    fetch_records(body, version, |t, bytes, _, w| each(t, bytes, w))
}

/// The records in a record set: the sum of its v2 batches' record counts, read from their
/// headers (a trailing partial batch, as brokers send at the size limit, is not counted).
fn record_count(set: &[u8]) -> u64 {
    let mut rest = set;
    let mut n = 0u64;
    while rest.len() >= 61 {
        let length = i32::from_be_bytes(rest[8..12].try_into().unwrap_or_default());
        let Some(total) = usize::try_from(length).ok().and_then(|l| l.checked_add(12)) else {
            break;
        };
        if total > rest.len() || rest[16] != 2 {
            break;
        }
        n += u64::try_from(i32::from_be_bytes(
            rest[57..61].try_into().unwrap_or_default(),
        ))
        .unwrap_or(0);
        rest = &rest[total..];
    }
    n
}

/// As [`fetch_record_bytes`], with each topic's record count too (from the batch headers).
pub fn fetch_records<'a>(
    body: &'a [u8],
    version: i16,
    mut each: impl FnMut(TopicRef<'a>, u64, u64, &[(i32, i64)]),
) -> Option<()> {
    let mut watermarks: Vec<(i32, i64)> = Vec::new();
    let (mut bytes, mut records) = (0u64, 0u64);
    walk_fetch(body, version, |event| match event {
        FetchEvent::Partition(_, p) => {
            if p.error_code == 0 {
                watermarks.push((p.partition, p.high_watermark));
            }
            bytes += p.records.len() as u64;
            records += record_count(p.records);
        }
        FetchEvent::TopicEnd(topic) => {
            each(topic, bytes, records, &watermarks);
            watermarks.clear();
            (bytes, records) = (0, 0);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_from_the_batch_headers_and_a_partial_batch_is_not() {
        use crate::protocol::records::test_batch;
        use kafka_protocol::records::Compression;
        let specs: Vec<test_batch::Spec<'_>> = (0..3)
            .map(|_| (None, Some(&b"value"[..]), &[][..]))
            .collect();
        let one = test_batch::encode(&specs, Compression::None);
        let mut set = one.to_vec();
        set.extend_from_slice(&test_batch::encode(&specs[..2], Compression::None));
        assert_eq!(record_count(&set), 5);
        // A broker cuts the last batch at the size limit: counted up to the whole batches.
        set.extend_from_slice(&one[..one.len() - 3]);
        assert_eq!(record_count(&set), 5);
        assert_eq!(record_count(&[]), 0);
        assert_eq!(record_count(&[0xff; 70]), 0, "garbage is no batch");
    }
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn response(version: i16) -> Vec<u8> {
        let mut r = FetchResponse::default();
        for (i, sizes) in [[100usize, 0], [7, 3000]].iter().enumerate() {
            let mut t = FetchableTopicResponse::default();
            if version >= 13 {
                t.topic_id = uuid::Uuid::from_bytes([i as u8 + 1; 16]);
            } else {
                t.topic = TopicName(StrBytes::from_string(format!("t{i}")));
            }
            for (p, size) in sizes.iter().enumerate() {
                let mut pd = PartitionData::default();
                pd.partition_index = p as i32;
                pd.high_watermark = 100 * (i as i64 + 1) + p as i64;
                // The last partition of each topic answers with an error: no watermark.
                pd.error_code = if p + 1 == sizes.len() && sizes.len() > 1 {
                    6
                } else {
                    0
                };
                pd.records = (*size > 0).then(|| Bytes::from(vec![1u8; *size]));
                t.partitions.push(pd);
            }
            r.responses.push(t);
        }
        let mut buf = BytesMut::new();
        r.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    fn walk(body: &[u8], version: i16) -> Option<Vec<(String, u64)>> {
        let mut out = Vec::new();
        fetch_record_bytes(body, version, |t, n, _| {
            let name = match t {
                TopicRef::Name(n) => n.to_string(),
                TopicRef::Id(id) => format!("id{}", id[0]),
            };
            out.push((name, n));
        })?;
        Some(out)
    }

    #[test]
    fn record_bytes_per_topic_at_every_version() {
        for version in 4..=15 {
            let got = walk(&response(version), version).unwrap();
            let names: Vec<String> = if version >= 13 {
                vec!["id1".into(), "id2".into()]
            } else {
                vec!["t0".into(), "t1".into()]
            };
            assert_eq!(
                got,
                vec![(names[0].clone(), 100), (names[1].clone(), 3007)],
                "v{version}"
            );
        }
    }

    #[test]
    fn high_watermarks_of_the_partitions_answered_without_error_at_every_version() {
        for version in 4..=15 {
            let mut marks = Vec::new();
            fetch_record_bytes(&response(version), version, |_, _, w| {
                marks.push(w.to_vec())
            })
            .unwrap();
            // Partition 1 of each topic answered with an error: left out.
            assert_eq!(marks, vec![vec![(0, 100)], vec![(0, 200)]], "v{version}");
        }
    }

    #[test]
    fn unexpected_tags_are_skipped_and_garbage_is_refused() {
        // A v15 body whose top-level tagged fields hold tag 0 (as tansu 0.6.0 sends).
        let mut body = response(15);
        assert_eq!(body.pop(), Some(0));
        body.extend_from_slice(&[1, 0, 3, 9, 9, 9]);
        assert_eq!(walk(&body, 15).unwrap().len(), 2);
        for cut in 0..body.len() - 6 {
            assert!(walk(&body[..cut], 15).is_none(), "cut at {cut}");
        }
        assert!(walk(&[0xff; 64], 12).is_none());
    }
}
