//! The answers to partly refused read requests (`consumers:`): Fetch, ListOffsets, OffsetCommit
//! and OffsetFetch merged with the upstream's answer, in its order with meshgate's refusals after
//! it, or standing alone; and the lone refusals of JoinGroup and ConsumerGroupHeartbeat.
//! `proxy::consume` hands over the verdicts.

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupHeartbeatResponse, FetchResponse, GroupId, JoinGroupResponse,
    ListOffsetsResponse, OffsetCommitResponse, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::merge::encode_response;
use super::{BrokerAddresses, ResponseMerge, RewriteError, TopicFilter};
use crate::protocol::header::{split_response, HeaderError};

/// A refused topic of a read request: its name (and id, for Fetch v13+), the partitions asked
/// for, and the error they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedTopic {
    pub name: StrBytes,
    pub id: uuid::Uuid,
    pub partitions: Vec<i32>,
    pub code: i16,
}

/// Decodes an upstream response, lets `edit` add meshgate's part, and encodes it again.
pub(crate) fn edit<R: Decodable + Encodable>(
    api: ApiKey,
    version: i16,
    frame: Bytes,
    edit: impl FnOnce(&mut R),
) -> Result<Bytes, RewriteError> {
    let err = |reason: String| RewriteError {
        api,
        version,
        reason,
    };
    let (header, mut body) =
        split_response(&frame, api, version).map_err(|e| err(e.to_string()))?;
    let mut response = R::decode(&mut body, version).map_err(|e| err(e.to_string()))?;
    edit(&mut response);
    encode_response(header.correlation_id, api, version, &response).map_err(|e| err(e.to_string()))
}

/// Fetch: the refused topics' partitions answered with their error and no records.
#[derive(Debug)]
pub struct FetchMerge {
    pub version: i16,
    pub refused: Vec<RefusedTopic>,
}

impl FetchMerge {
    /// Appends the refused topics' answers to `r` (shared with a partner zone's merge).
    pub(crate) fn add(refused: &[RefusedTopic], r: &mut FetchResponse) {
        for t in refused {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(t.name.clone());
            topic.topic_id = t.id;
            for &index in &t.partitions {
                let mut p = PartitionData::default();
                p.partition_index = index;
                p.error_code = t.code;
                p.high_watermark = -1;
                p.last_stable_offset = -1;
                p.log_start_offset = -1;
                p.preferred_read_replica = BrokerId(-1);
                // Empty, not null: brokers send an empty record set, and librdkafka cannot
                // parse a null one.
                p.records = Some(Bytes::new());
                topic.partitions.push(p);
            }
            r.responses.push(topic);
        }
    }
}

impl ResponseMerge for FetchMerge {
    fn merge(&self, frame: Bytes, _: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        edit(
            ApiKey::Fetch,
            self.version,
            frame,
            |r: &mut FetchResponse| Self::add(&self.refused, r),
        )
    }
}

/// ListOffsets: the refused topics' partitions answered with their error and no offset.
#[derive(Debug)]
pub struct ListOffsetsMerge {
    pub version: i16,
    pub refused: Vec<RefusedTopic>,
}

impl ListOffsetsMerge {
    /// Appends the refused topics' answers to `r` (shared with a partner zone's merge).
    pub(crate) fn add(refused: &[RefusedTopic], r: &mut ListOffsetsResponse) {
        for t in refused {
            let mut topic = ListOffsetsTopicResponse::default();
            topic.name = TopicName(t.name.clone());
            for &index in &t.partitions {
                let mut p = ListOffsetsPartitionResponse::default();
                p.partition_index = index;
                p.error_code = t.code;
                p.timestamp = -1;
                p.offset = -1;
                p.leader_epoch = -1;
                topic.partitions.push(p);
            }
            r.topics.push(topic);
        }
    }

    /// The whole answer when every topic was refused.
    pub fn refused_alone(&self, correlation_id: i32) -> Result<Bytes, HeaderError> {
        let mut r = ListOffsetsResponse::default();
        Self::add(&self.refused, &mut r);
        encode_response(correlation_id, ApiKey::ListOffsets, self.version, &r)
    }
}

impl ResponseMerge for ListOffsetsMerge {
    fn merge(&self, frame: Bytes, _: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        edit(ApiKey::ListOffsets, self.version, frame, |r| {
            Self::add(&self.refused, r)
        })
    }
}

/// OffsetCommit: the refused topics' partitions answered with their error.
#[derive(Debug)]
pub struct OffsetCommitMerge {
    pub version: i16,
    pub refused: Vec<RefusedTopic>,
}

impl OffsetCommitMerge {
    /// Appends the refused topics' answers to `r` (shared with a partner zone's merge).
    pub(crate) fn add(refused: &[RefusedTopic], r: &mut OffsetCommitResponse) {
        for t in refused {
            let mut topic = OffsetCommitResponseTopic::default();
            topic.name = TopicName(t.name.clone());
            for &index in &t.partitions {
                let mut p = OffsetCommitResponsePartition::default();
                p.partition_index = index;
                p.error_code = t.code;
                topic.partitions.push(p);
            }
            r.topics.push(topic);
        }
    }

    pub fn refused_alone(&self, correlation_id: i32) -> Result<Bytes, HeaderError> {
        let mut r = OffsetCommitResponse::default();
        Self::add(&self.refused, &mut r);
        encode_response(correlation_id, ApiKey::OffsetCommit, self.version, &r)
    }
}

impl ResponseMerge for OffsetCommitMerge {
    fn merge(&self, frame: Bytes, _: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        edit(ApiKey::OffsetCommit, self.version, frame, |r| {
            Self::add(&self.refused, r)
        })
    }
}

/// OffsetFetch: refused groups (v8+: each with its error; v1-7: the one group, top-level), the
/// refused topics of each group, and the topics of a group's "all topics" answer the principal
/// may not read, left out.
#[derive(Debug)]
pub struct OffsetFetchMerge {
    pub version: i16,
    /// (group, error code, refused topics); a group with a code other than 0 is refused whole.
    pub groups: Vec<(StrBytes, i16, Vec<RefusedTopic>)>,
    /// Whether the principal may read a topic: the topics of an "all topics" answer it may not
    /// are left out.
    pub readable: TopicFilter,
}

impl OffsetFetchMerge {
    fn add(&self, r: &mut OffsetFetchResponse) {
        if self.version < 8 {
            r.topics.retain(|t| (self.readable.0)(t.name.0.as_str()));
            if let Some((_, code, refused)) = self.groups.first() {
                if *code != 0 {
                    r.error_code = *code;
                }
                for t in refused {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = TopicName(t.name.clone());
                    for &index in &t.partitions {
                        let mut p = OffsetFetchResponsePartition::default();
                        p.partition_index = index;
                        p.committed_offset = -1;
                        p.committed_leader_epoch = -1;
                        p.error_code = t.code;
                        topic.partitions.push(p);
                    }
                    r.topics.push(topic);
                }
            }
            return;
        }
        for g in &mut r.groups {
            g.topics.retain(|t| (self.readable.0)(t.name.0.as_str()));
        }
        for (group, code, refused) in &self.groups {
            let existing = r.groups.iter().position(|g| g.group_id.0 == *group);
            let g = match existing {
                Some(i) => &mut r.groups[i],
                None => {
                    let mut g = OffsetFetchResponseGroup::default();
                    g.group_id = GroupId(group.clone());
                    r.groups.push(g);
                    r.groups.last_mut().expect("just pushed")
                }
            };
            if *code != 0 {
                g.error_code = *code;
            }
            for t in refused {
                let mut topic = OffsetFetchResponseTopics::default();
                topic.name = TopicName(t.name.clone());
                for &index in &t.partitions {
                    let mut p = OffsetFetchResponsePartitions::default();
                    p.partition_index = index;
                    p.committed_offset = -1;
                    p.committed_leader_epoch = -1;
                    p.error_code = t.code;
                    topic.partitions.push(p);
                }
                g.topics.push(topic);
            }
        }
    }

    pub fn refused_alone(&self, correlation_id: i32) -> Result<Bytes, HeaderError> {
        let mut r = OffsetFetchResponse::default();
        self.add(&mut r);
        encode_response(correlation_id, ApiKey::OffsetFetch, self.version, &r)
    }
}

impl ResponseMerge for OffsetFetchMerge {
    fn merge(&self, frame: Bytes, _: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        edit(ApiKey::OffsetFetch, self.version, frame, |r| self.add(r))
    }
}

/// JoinGroup refused: the error, no generation, the member id the client sent.
pub fn join_group_refused(
    correlation_id: i32,
    version: i16,
    member_id: StrBytes,
    code: i16,
) -> Result<Bytes, HeaderError> {
    let mut r = JoinGroupResponse::default();
    r.error_code = code;
    r.generation_id = -1;
    r.member_id = member_id;
    // Nullable from v7; an empty name before.
    r.protocol_name = if version >= 7 {
        None
    } else {
        Some(StrBytes::default())
    };
    encode_response(correlation_id, ApiKey::JoinGroup, version, &r)
}

/// ConsumerGroupHeartbeat refused: the error and its message.
pub fn consumer_group_heartbeat_refused(
    correlation_id: i32,
    version: i16,
    code: i16,
    message: &str,
) -> Result<Bytes, HeaderError> {
    let mut r = ConsumerGroupHeartbeatResponse::default();
    r.error_code = code;
    r.error_message = Some(StrBytes::from_string(message.to_string()));
    r.member_epoch = -1;
    encode_response(correlation_id, ApiKey::ConsumerGroupHeartbeat, version, &r)
}

#[cfg(test)]
mod tests {
    use super::super::testing::NoAddresses;
    use super::*;
    use std::sync::Arc;

    fn refused(name: &'static str, partitions: &[i32], code: i16) -> RefusedTopic {
        RefusedTopic {
            name: StrBytes::from_static_str(name),
            id: uuid::Uuid::nil(),
            partitions: partitions.to_vec(),
            code,
        }
    }

    fn frame<M: Encodable>(api: ApiKey, version: i16, m: &M) -> Bytes {
        super::super::testing::response_frame(api, version, 9, m)
    }

    #[test]
    fn a_fetch_answer_keeps_the_upstream_records_and_adds_the_refused_partitions_without_any() {
        let mut upstream = FetchResponse::default();
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("open.v1"));
        let mut p = PartitionData::default();
        p.records = Some(Bytes::from_static(b"records"));
        t.partitions.push(p);
        upstream.responses.push(t);
        let merge = FetchMerge {
            version: 12,
            refused: vec![refused("secret.v1", &[0, 2], 29)],
        };
        let out = merge
            .merge(frame(ApiKey::Fetch, 12, &upstream), &NoAddresses)
            .unwrap();
        let (h, mut body) = split_response(&out, ApiKey::Fetch, 12).unwrap();
        assert_eq!(h.correlation_id, 9);
        let r = FetchResponse::decode(&mut body, 12).unwrap();
        assert_eq!(r.responses.len(), 2);
        assert_eq!(
            r.responses[0].partitions[0].records.as_deref(),
            Some(&b"records"[..])
        );
        let denied = &r.responses[1];
        assert_eq!(denied.topic.0.as_str(), "secret.v1");
        let codes: Vec<_> = denied
            .partitions
            .iter()
            .map(|p| {
                // An empty record set, not a null one (which librdkafka cannot parse).
                let empty = p.records.as_ref().is_some_and(|r| r.is_empty());
                (p.partition_index, p.error_code, empty)
            })
            .collect();
        assert_eq!(codes, vec![(0, 29, true), (2, 29, true)]);
    }

    #[test]
    fn offset_fetch_hides_unreadable_topics_and_refuses_groups_in_both_layouts() {
        let readable = TopicFilter(Arc::new(|t: &str| t != "secret.v1"));
        // v8+: groups.
        let mut upstream = OffsetFetchResponse::default();
        let mut g = OffsetFetchResponseGroup::default();
        g.group_id = GroupId(StrBytes::from_static_str("g1"));
        for name in ["open.v1", "secret.v1"] {
            let mut t = OffsetFetchResponseTopics::default();
            t.name = TopicName(StrBytes::from_static_str(name));
            g.topics.push(t);
        }
        upstream.groups.push(g);
        let merge = OffsetFetchMerge {
            version: 8,
            groups: vec![(StrBytes::from_static_str("g2"), 30, vec![])],
            readable: readable.clone(),
        };
        let out = merge
            .merge(frame(ApiKey::OffsetFetch, 8, &upstream), &NoAddresses)
            .unwrap();
        let (_, mut body) = split_response(&out, ApiKey::OffsetFetch, 8).unwrap();
        let r = OffsetFetchResponse::decode(&mut body, 8).unwrap();
        let topics: Vec<_> = r.groups[0]
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect();
        assert_eq!(topics, vec!["open.v1"]);
        assert_eq!(
            (r.groups[1].group_id.0.as_str(), r.groups[1].error_code),
            ("g2", 30)
        );
        // v1-7: one group, top-level error, refused topics added.
        let merge = OffsetFetchMerge {
            version: 7,
            groups: vec![(
                StrBytes::from_static_str("g"),
                0,
                vec![refused("secret.v1", &[1], 29)],
            )],
            readable,
        };
        let alone = merge.refused_alone(4).unwrap();
        let (_, mut body) = split_response(&alone, ApiKey::OffsetFetch, 7).unwrap();
        let r = OffsetFetchResponse::decode(&mut body, 7).unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, 29);
        assert_eq!(r.topics[0].partitions[0].committed_offset, -1);
    }

    #[test]
    fn list_offsets_and_offset_commit_refusals_stand_alone() {
        let lo = ListOffsetsMerge {
            version: 7,
            refused: vec![refused("secret.v1", &[0], 29)],
        };
        let (_, mut body) =
            split_response(&lo.refused_alone(1).unwrap(), ApiKey::ListOffsets, 7).unwrap();
        let r = ListOffsetsResponse::decode(&mut body, 7).unwrap();
        assert_eq!(
            (
                r.topics[0].partitions[0].error_code,
                r.topics[0].partitions[0].offset
            ),
            (29, -1)
        );
        let oc = OffsetCommitMerge {
            version: 8,
            refused: vec![refused("secret.v1", &[0, 1], 30)],
        };
        let (_, mut body) =
            split_response(&oc.refused_alone(1).unwrap(), ApiKey::OffsetCommit, 8).unwrap();
        let r = OffsetCommitResponse::decode(&mut body, 8).unwrap();
        assert_eq!(
            r.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect::<Vec<_>>(),
            vec![30, 30]
        );
    }
}
