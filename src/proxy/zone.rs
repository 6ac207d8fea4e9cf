//! Partner zones on the wire: every request on a zone's listener is rewritten from the partner's
//! names to the cluster's, and every answer back, so that the partner reads the authoritative
//! topics under its aliases, without a copy, and sees nothing else.
//!
//! - **Topics.** A shared topic's alias becomes its real name in Metadata, Fetch (v12 and older),
//!   ListOffsets, OffsetCommit, OffsetFetch, DescribeConfigs and ConsumerGroupHeartbeat
//!   subscriptions, and the real name becomes the alias in their answers. A name the zone does not
//!   share is answered as the broker answers a topic that does not exist (Metadata:
//!   UNKNOWN_TOPIC_OR_PARTITION) or a topic the principal may not read (the others:
//!   TOPIC_AUTHORIZATION_FAILED), and never reaches the cluster. A Metadata answer for all topics
//!   keeps the shared ones only.
//! - **Topic ids** (Fetch v13+, OffsetFetch v10+) are the real topics' ids, which the zone's
//!   Metadata answers hand out for shared topics; an id of a topic the zone does not share, or
//!   one meshgate has not seen, is refused (UNKNOWN_TOPIC_ID, fail closed). A Fetch that names
//!   only shared ids is forwarded as its own bytes, and its answer too: no decoding on the hot
//!   path of a modern consumer.
//! - **Groups.** Every group id gets the zone's prefix on the way in (FindCoordinator, JoinGroup,
//!   SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ConsumerGroupHeartbeat,
//!   DescribeGroups, ConsumerGroupDescribe) and loses it on the way out; ListGroups answers the zone's groups only. A
//!   partner can neither see nor join nor commit for a group outside its prefix.
//! - **Read-only unless a share says `produce: true`.** A Produce whose topics are all such shares
//!   is renamed and judged as any producer's (`Verdict::Produce`), its answer renamed back; any
//!   other Produce is refused (TOPIC_AUTHORIZATION_FAILED for every partition; with acks=0 the
//!   connection closes), so are CreateTopics, DeleteTopics and a transactional InitProducerId
//!   (an idempotent producer gets its id when some share grants produce); any other API
//!   closes the connection, as a broker does for an API it will not serve. Transactional
//!   coordinators (FindCoordinator key type 1) are refused.
//! - **Who.** Only the zone's principals are served: any other principal's request closes the
//!   connection.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, InitProducerIdResponse, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::consume::UNKNOWN_TOPIC_ID;
use super::enforce::Decision;
use super::rewrite::merge::encode_response;
use super::rewrite::read_merge::{
    consumer_group_heartbeat_refused, edit, FetchMerge, ListOffsetsMerge, OffsetCommitMerge,
    RefusedTopic,
};
use super::rewrite::{
    rewrite_response, BrokerAddresses, ResponseAction, ResponseMerge, RewriteError,
};
use crate::policy::zone::Zone;
use crate::protocol::header::{join_request, split_request, undecodable, HeaderError};

/// TOPIC_AUTHORIZATION_FAILED.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// CLUSTER_AUTHORIZATION_FAILED.
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;
/// DescribeConfigs resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// What a zone does with one request.
pub enum Verdict {
    Decision(Decision),
    /// A Produce to shares the zone lets the partner write: this request, renamed to the real
    /// topics, is judged as any producer's; its answer is renamed back
    /// ([`rename_produce_answer`]).
    Produce(Bytes),
    /// Close the connection, for this reason.
    Close(String),
}

/// One request on a zone's listener.
pub struct ZoneRequest<'a> {
    pub zone: &'a Arc<Zone>,
    /// Topic ids learned from the zone's Metadata answers (`Gateway::topic_ids`).
    pub topic_ids: &'a RwLock<HashMap<uuid::Uuid, String>>,
    /// Where the partner's groups are noted as active.
    pub stats: &'a crate::zone_stats::ZoneStats,
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl ZoneRequest<'_> {
    /// The real topic of a partner's topic name.
    fn topic(&self, alias: &str) -> Option<StrBytes> {
        self.zone.topic_of(alias).map(name)
    }

    /// Turns a partner's topic name into the real topic's, in place; false (left as it is) for a
    /// name the zone does not share.
    fn to_real(&self, n: &mut TopicName) -> bool {
        match self.topic(n) {
            Some(real) => {
                *n = TopicName(real);
                true
            }
            None => false,
        }
    }

    /// Keeps a request's entries that name shared topics, renamed to the real topics; the
    /// others leave the request and are refused in `merge` (TOPIC_AUTHORIZATION_FAILED).
    fn keep_shared_or_refuse<T>(
        &self,
        entries: &mut Vec<T>,
        merge: &mut ZoneMerge,
        topic: impl Fn(&mut T) -> &mut TopicName,
        partitions: impl Fn(&T) -> Vec<i32>,
    ) {
        entries.retain_mut(|t| {
            if self.to_real(topic(t)) {
                return true;
            }
            let asked = topic(t).0.clone();
            merge.refuse(asked, uuid::Uuid::nil(), partitions(t));
            false
        });
    }

    /// The real topic of an id, when the zone shares it.
    fn shared_id(&self, id: &uuid::Uuid) -> Option<String> {
        let ids = self.topic_ids.read().unwrap_or_else(|p| p.into_inner());
        ids.get(id)
            .filter(|t| self.zone.alias_of(t).is_some())
            .cloned()
    }

    fn group(&self, g: &GroupId) -> GroupId {
        self.stats.group(&self.zone.name, &g.0);
        GroupId(name(&self.zone.group(&g.0)))
    }

    fn merge(&self, api: ApiKey, version: i16) -> ZoneMerge {
        ZoneMerge {
            api,
            version,
            zone: self.zone.clone(),
            refused: Vec::new(),
            unknown: Vec::new(),
            refused_resources: Vec::new(),
        }
    }

    /// Judges and rewrites one request of a zone connection.
    pub fn judge(&self, api: ApiKey, frame: &Bytes, version: i16) -> Result<Verdict, HeaderError> {
        let (header, mut body) = split_request(frame, api, version)?;
        let bad = |e| undecodable(api, version, e);
        let trimmed = |frame: Bytes, merge: ZoneMerge| {
            Ok(Verdict::Decision(Decision::ForwardTrimmed {
                frame,
                merge: Box::new(merge),
            }))
        };
        match api {
            ApiKey::Metadata => {
                let mut req = MetadataRequest::decode(&mut body, version).map_err(bad)?;
                let mut merge = self.merge(api, version);
                // A zone never creates topics; the flag exists from v4 (older requests cannot set
                // it, and only shared names, which exist, reach the cluster anyway).
                if version >= 4 {
                    req.allow_auto_topic_creation = false;
                }
                if let Some(topics) = &mut req.topics {
                    topics.retain_mut(|t| {
                        if let Some(n) = &t.name {
                            match self.topic(n) {
                                Some(real) => {
                                    t.name = Some(TopicName(real));
                                    return true;
                                }
                                None => merge.unknown.push(n.0.clone()),
                            }
                            return false;
                        }
                        // By id alone (v10+): shared ids only.
                        self.shared_id(&t.topic_id).is_some()
                    });
                }
                trimmed(join_request(&header, api, version, &req)?, merge)
            }
            ApiKey::DescribeCluster | ApiKey::GetTelemetrySubscriptions | ApiKey::PushTelemetry => {
                Ok(Verdict::Decision(Decision::Forward))
            }
            ApiKey::Fetch => self.fetch(
                &header,
                FetchRequest::decode(&mut body, version).map_err(bad)?,
                version,
            ),
            ApiKey::ListOffsets => {
                let mut req = ListOffsetsRequest::decode(&mut body, version).map_err(bad)?;
                let mut merge = self.merge(api, version);
                self.keep_shared_or_refuse(
                    &mut req.topics,
                    &mut merge,
                    |t| &mut t.name,
                    |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                );
                if req.topics.is_empty() && !merge.refused.is_empty() {
                    return Ok(Verdict::Decision(Decision::Respond(
                        ListOffsetsMerge {
                            version,
                            refused: merge.refused,
                        }
                        .refused_alone(header.correlation_id)?,
                    )));
                }
                trimmed(join_request(&header, api, version, &req)?, merge)
            }
            ApiKey::OffsetCommit => {
                let mut req = OffsetCommitRequest::decode(&mut body, version).map_err(bad)?;
                let mut merge = self.merge(api, version);
                req.group_id = self.group(&req.group_id);
                self.keep_shared_or_refuse(
                    &mut req.topics,
                    &mut merge,
                    |t| &mut t.name,
                    |t| t.partitions.iter().map(|p| p.partition_index).collect(),
                );
                if req.topics.is_empty() && !merge.refused.is_empty() {
                    return Ok(Verdict::Decision(Decision::Respond(
                        OffsetCommitMerge {
                            version,
                            refused: merge.refused,
                        }
                        .refused_alone(header.correlation_id)?,
                    )));
                }
                trimmed(join_request(&header, api, version, &req)?, merge)
            }
            ApiKey::OffsetFetch => {
                let mut req = OffsetFetchRequest::decode(&mut body, version).map_err(bad)?;
                // Topics the zone does not share are left out of the request; the answer then
                // lists only shared topics, under their aliases.
                let keep = |n: &mut TopicName, id: uuid::Uuid| -> bool {
                    match id.is_nil() {
                        true => self.to_real(n),
                        false => self.shared_id(&id).is_some(),
                    }
                };
                if version < 8 {
                    req.group_id = self.group(&req.group_id);
                    if let Some(topics) = &mut req.topics {
                        topics.retain_mut(|t| keep(&mut t.name, uuid::Uuid::nil()));
                    }
                } else {
                    for g in &mut req.groups {
                        g.group_id = self.group(&g.group_id);
                        if let Some(topics) = &mut g.topics {
                            topics.retain_mut(|t| keep(&mut t.name, t.topic_id));
                        }
                    }
                }
                trimmed(
                    join_request(&header, api, version, &req)?,
                    self.merge(api, version),
                )
            }
            ApiKey::FindCoordinator => {
                let mut req = FindCoordinatorRequest::decode(&mut body, version).map_err(bad)?;
                if req.key_type != 0 {
                    let mut r = FindCoordinatorResponse::default();
                    let message = "meshgate: a partner zone has no transactions".to_string();
                    if version < 4 {
                        r.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                        r.error_message = Some(name(&message));
                        r.node_id = kafka_protocol::messages::BrokerId(-1);
                        r.port = -1;
                    }
                    for k in &req.coordinator_keys {
                        let mut c = Coordinator::default();
                        c.key = k.clone();
                        c.node_id = kafka_protocol::messages::BrokerId(-1);
                        c.port = -1;
                        c.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                        c.error_message = Some(name(&message));
                        r.coordinators.push(c);
                    }
                    return respond(header.correlation_id, api, version, &r);
                }
                // v0-3 name one key; v4+ a list (KIP-699), and `key` must stay unset there.
                if version < 4 {
                    req.key = name(&self.zone.group(&req.key));
                }
                for k in &mut req.coordinator_keys {
                    *k = name(&self.zone.group(k));
                }
                trimmed(
                    join_request(&header, api, version, &req)?,
                    self.merge(api, version),
                )
            }
            ApiKey::JoinGroup => {
                let mut req = JoinGroupRequest::decode(&mut body, version).map_err(bad)?;
                req.group_id = self.group(&req.group_id);
                edited(&header, api, version, &req)
            }
            ApiKey::SyncGroup => {
                let mut req = SyncGroupRequest::decode(&mut body, version).map_err(bad)?;
                req.group_id = self.group(&req.group_id);
                edited(&header, api, version, &req)
            }
            ApiKey::Heartbeat => {
                let mut req = HeartbeatRequest::decode(&mut body, version).map_err(bad)?;
                req.group_id = self.group(&req.group_id);
                edited(&header, api, version, &req)
            }
            ApiKey::LeaveGroup => {
                let mut req = LeaveGroupRequest::decode(&mut body, version).map_err(bad)?;
                req.group_id = self.group(&req.group_id);
                edited(&header, api, version, &req)
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let mut req =
                    ConsumerGroupHeartbeatRequest::decode(&mut body, version).map_err(bad)?;
                req.group_id = self.group(&req.group_id);
                let refuse = |code: i16, message: String| {
                    Ok(Verdict::Decision(Decision::Respond(
                        consumer_group_heartbeat_refused(
                            header.correlation_id,
                            version,
                            code,
                            &message,
                        )?,
                    )))
                };
                if req
                    .subscribed_topic_regex
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
                {
                    return refuse(
                        INVALID_REQUEST,
                        "meshgate: a partner zone subscribes by topic name, not by pattern".into(),
                    );
                }
                if let Some(names) = &mut req.subscribed_topic_names {
                    for n in names.iter_mut() {
                        if !self.to_real(n) {
                            return refuse(
                                TOPIC_AUTHORIZATION_FAILED,
                                format!("meshgate: topic `{}` is not shared with this zone", n.0),
                            );
                        }
                    }
                }
                edited(&header, api, version, &req)
            }
            ApiKey::ListGroups => Ok(Verdict::Decision(Decision::ForwardTrimmed {
                frame: frame.clone(),
                merge: Box::new(self.merge(api, version)),
            })),
            ApiKey::DescribeGroups => {
                let mut req = DescribeGroupsRequest::decode(&mut body, version).map_err(bad)?;
                for g in &mut req.groups {
                    *g = self.group(g);
                }
                trimmed(
                    join_request(&header, api, version, &req)?,
                    self.merge(api, version),
                )
            }
            ApiKey::ConsumerGroupDescribe => {
                let mut req =
                    ConsumerGroupDescribeRequest::decode(&mut body, version).map_err(bad)?;
                for g in &mut req.group_ids {
                    *g = self.group(g);
                }
                trimmed(
                    join_request(&header, api, version, &req)?,
                    self.merge(api, version),
                )
            }
            ApiKey::DescribeConfigs => {
                let mut req = DescribeConfigsRequest::decode(&mut body, version).map_err(bad)?;
                let mut merge = self.merge(api, version);
                req.resources.retain_mut(|r| {
                    if r.resource_type == TOPIC_RESOURCE {
                        if let Some(real) = self.topic(&r.resource_name) {
                            r.resource_name = real;
                            return true;
                        }
                        merge.refused_resources.push((
                            r.resource_type,
                            r.resource_name.clone(),
                            TOPIC_AUTHORIZATION_FAILED,
                        ));
                    } else {
                        merge.refused_resources.push((
                            r.resource_type,
                            r.resource_name.clone(),
                            CLUSTER_AUTHORIZATION_FAILED,
                        ));
                    }
                    false
                });
                if req.resources.is_empty() {
                    let mut r = DescribeConfigsResponse::default();
                    merge.add_resources(&mut r);
                    return respond(header.correlation_id, api, version, &r);
                }
                trimmed(join_request(&header, api, version, &req)?, merge)
            }
            ApiKey::Produce => {
                let mut req = ProduceRequest::decode(&mut body, version).map_err(bad)?;
                // Every topic must be one the zone lets the partner write; then the request goes
                // on, renamed. A request that names any other topic is refused whole: the
                // partner's producer sent a topic it was not given.
                let mut writable = !req.topic_data.is_empty();
                for t in &mut req.topic_data {
                    if version >= 13 {
                        writable &= self
                            .shared_id(&t.topic_id)
                            .is_some_and(|real| self.zone.writes(&real));
                    } else {
                        match self.zone.writable_topic_of(&t.name) {
                            Some(real) => t.name = TopicName(name(real)),
                            None => writable = false,
                        }
                    }
                }
                if writable {
                    return Ok(Verdict::Produce(join_request(&header, api, version, &req)?));
                }
                if req.acks == 0 {
                    return Ok(Verdict::Close(
                        "acks=0 produce to a topic the zone does not let the partner write".into(),
                    ));
                }
                // The refusal names the topics as the partner sent them.
                let req = {
                    let (_, mut body) = split_request(frame, api, version)?;
                    ProduceRequest::decode(&mut body, version).map_err(bad)?
                };
                let mut r = ProduceResponse::default();
                for t in &req.topic_data {
                    let mut topic = TopicProduceResponse::default();
                    topic.name = t.name.clone();
                    topic.topic_id = t.topic_id;
                    for p in &t.partition_data {
                        let mut part = PartitionProduceResponse::default();
                        part.index = p.index;
                        part.error_code = TOPIC_AUTHORIZATION_FAILED;
                        part.base_offset = -1;
                        part.log_append_time_ms = -1;
                        part.log_start_offset = -1;
                        part.error_message = Some(name(
                            "meshgate: this partner zone does not let you write to every topic of this request",
                        ));
                        topic.partition_responses.push(part);
                    }
                    r.responses.push(topic);
                }
                respond(header.correlation_id, api, version, &r)
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut body, version).map_err(bad)?;
                let mut r = CreateTopicsResponse::default();
                for t in &req.topics {
                    let mut res = CreatableTopicResult::default();
                    res.name = t.name.clone();
                    res.error_code = TOPIC_AUTHORIZATION_FAILED;
                    res.error_message = Some(name("meshgate: a partner zone creates no topics"));
                    res.num_partitions = -1;
                    res.replication_factor = -1;
                    r.topics.push(res);
                }
                respond(header.correlation_id, api, version, &r)
            }
            ApiKey::DeleteTopics => {
                let req = DeleteTopicsRequest::decode(&mut body, version).map_err(bad)?;
                let mut r = DeleteTopicsResponse::default();
                let names = req
                    .topic_names
                    .iter()
                    .cloned()
                    .chain(req.topics.iter().filter_map(|t| t.name.clone()));
                for n in names {
                    let mut res = DeletableTopicResult::default();
                    res.name = Some(n);
                    res.error_code = TOPIC_AUTHORIZATION_FAILED;
                    r.responses.push(res);
                }
                respond(header.correlation_id, api, version, &r)
            }
            ApiKey::InitProducerId => {
                // An idempotent producer's id (no transactional id) for a zone that lets its
                // partner write somewhere; transactions never.
                let req =
                    kafka_protocol::messages::InitProducerIdRequest::decode(&mut body, version)
                        .map_err(bad)?;
                let writes = self.zone.shares.iter().any(|s| s.produce);
                if writes && req.transactional_id.as_ref().is_none_or(|t| t.is_empty()) {
                    return Ok(Verdict::Decision(Decision::Forward));
                }
                let mut r = InitProducerIdResponse::default();
                r.error_code = CLUSTER_AUTHORIZATION_FAILED;
                r.producer_id = kafka_protocol::messages::ProducerId(-1);
                r.producer_epoch = -1;
                respond(header.correlation_id, api, version, &r)
            }
            other => Ok(Verdict::Close(format!(
                "{other:?} is not served on a partner zone"
            ))),
        }
    }

    fn fetch(
        &self,
        header: &RequestHeader,
        mut req: FetchRequest,
        version: i16,
    ) -> Result<Verdict, HeaderError> {
        let mut merge = self.merge(ApiKey::Fetch, version);
        let by_id = version >= 13;
        req.topics.retain_mut(|t| {
            let partitions = || t.partitions.iter().map(|p| p.partition).collect();
            if by_id {
                if self.shared_id(&t.topic_id).is_some() {
                    return true;
                }
                // Unknown or not shared: the same answer, so an id reveals nothing.
                merge.refused.push(RefusedTopic {
                    name: StrBytes::default(),
                    id: t.topic_id,
                    partitions: partitions(),
                    code: UNKNOWN_TOPIC_ID,
                });
                return false;
            }
            if self.to_real(&mut t.topic) {
                return true;
            }
            merge.refuse(t.topic.0.clone(), uuid::Uuid::nil(), partitions());
            false
        });
        req.forgotten_topics_data.retain_mut(|t| match by_id {
            true => self.shared_id(&t.topic_id).is_some(),
            false => self.to_real(&mut t.topic),
        });
        if by_id && merge.refused.is_empty() {
            // Only shared ids: the client's own bytes go, and the broker's come back.
            return Ok(Verdict::Decision(Decision::Forward));
        }
        let frame = join_request(header, ApiKey::Fetch, version, &req)?;
        if by_id {
            return Ok(Verdict::Decision(Decision::ForwardTrimmed {
                frame,
                merge: Box::new(FetchMerge {
                    version,
                    refused: merge.refused,
                }),
            }));
        }
        Ok(Verdict::Decision(Decision::ForwardTrimmed {
            frame,
            merge: Box::new(merge),
        }))
    }
}

/// A Produce answer to a zone's producer, with the real topics' names turned back into the
/// partner's (v13+ answers name topics by id: unchanged).
pub fn rename_produce_answer(
    zone: &Zone,
    frame: Bytes,
    version: i16,
) -> Result<Bytes, RewriteError> {
    if version >= 13 {
        return Ok(frame);
    }
    edit(
        ApiKey::Produce,
        version,
        frame,
        |r: &mut ProduceResponse| {
            for t in &mut r.responses {
                if let Some(alias) = zone.alias_of(&t.name) {
                    t.name = TopicName(name(alias));
                }
            }
        },
    )
}

/// Forward this edited request; its answer passes as it is.
fn edited<M: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    req: &M,
) -> Result<Verdict, HeaderError> {
    Ok(Verdict::Decision(Decision::ForwardEdited(join_request(
        header, api, version, req,
    )?)))
}

fn respond<M: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    r: &M,
) -> Result<Verdict, HeaderError> {
    Ok(Verdict::Decision(Decision::Respond(encode_response(
        correlation_id,
        api,
        version,
        r,
    )?)))
}

/// A zone request's answer, renamed back to the partner's names, with meshgate's refusals.
#[derive(Debug)]
pub struct ZoneMerge {
    api: ApiKey,
    version: i16,
    zone: Arc<Zone>,
    /// Refused topics, under the partner's names.
    refused: Vec<RefusedTopic>,
    /// Metadata: names asked for that the zone does not share.
    unknown: Vec<StrBytes>,
    /// DescribeConfigs: (resource type, name, error).
    refused_resources: Vec<(i8, StrBytes, i16)>,
}

impl ZoneMerge {
    fn refuse(&mut self, name: StrBytes, id: uuid::Uuid, partitions: Vec<i32>) {
        self.refused.push(RefusedTopic {
            name,
            id,
            partitions,
            code: TOPIC_AUTHORIZATION_FAILED,
        });
    }

    /// The partner's name of a real topic; `None`: not shared.
    fn alias(&self, real: &TopicName) -> Option<TopicName> {
        self.zone.alias_of(real).map(|a| TopicName(name(a)))
    }

    /// Keeps the entries of an answer that name a shared topic, renamed to the partner's name,
    /// and drops the others.
    fn keep_shared<T>(&self, entries: &mut Vec<T>, topic: impl Fn(&mut T) -> &mut TopicName) {
        entries.retain_mut(|t| {
            let n = topic(t);
            match self.alias(n) {
                Some(alias) => {
                    *n = alias;
                    true
                }
                None => false,
            }
        });
    }

    fn add_resources(&self, r: &mut DescribeConfigsResponse) {
        for (kind, resource, code) in &self.refused_resources {
            let mut res = DescribeConfigsResult::default();
            res.error_code = *code;
            res.error_message = Some(name("meshgate: not shared with this partner zone"));
            res.resource_type = *kind;
            res.resource_name = resource.clone();
            r.results.push(res);
        }
    }
}

impl ResponseMerge for ZoneMerge {
    fn merge(&self, frame: Bytes, addrs: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        let (api, version) = (self.api, self.version);
        match api {
            ApiKey::Metadata => {
                // Broker addresses as on every listener (and the topic ids noted), then names.
                let frame = rewrite_response(&ResponseAction::Rewrite(api, version), frame, addrs)?;
                edit(api, version, frame, |r: &mut MetadataResponse| {
                    r.topics
                        .retain_mut(|t| match t.name.as_ref().and_then(|n| self.alias(n)) {
                            Some(alias) => {
                                t.name = Some(alias);
                                true
                            }
                            None => false,
                        });
                    for n in &self.unknown {
                        let mut t = MetadataResponseTopic::default();
                        t.name = Some(TopicName(n.clone()));
                        t.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                        r.topics.push(t);
                    }
                })
            }
            ApiKey::Fetch => edit(api, version, frame, |r: &mut FetchResponse| {
                self.keep_shared(&mut r.responses, |t| &mut t.topic);
                FetchMerge::add(&self.refused, r);
            }),
            ApiKey::ListOffsets => edit(api, version, frame, |r: &mut ListOffsetsResponse| {
                self.keep_shared(&mut r.topics, |t| &mut t.name);
                ListOffsetsMerge::add(&self.refused, r);
            }),
            ApiKey::OffsetCommit => edit(api, version, frame, |r: &mut OffsetCommitResponse| {
                self.keep_shared(&mut r.topics, |t| &mut t.name);
                OffsetCommitMerge::add(&self.refused, r);
            }),
            ApiKey::OffsetFetch => edit(api, version, frame, |r: &mut OffsetFetchResponse| {
                self.keep_shared(&mut r.topics, |t| &mut t.name);
                for g in &mut r.groups {
                    if let Some(partner) = self.zone.partner_group(&g.group_id) {
                        g.group_id = GroupId(name(partner));
                    }
                    g.topics.retain_mut(|t| {
                        if t.name.is_empty() {
                            // v10+ names topics by id: ids are not renamed.
                            return true;
                        }
                        match self.alias(&t.name) {
                            Some(alias) => {
                                t.name = alias;
                                true
                            }
                            None => false,
                        }
                    });
                }
            }),
            ApiKey::FindCoordinator => {
                let frame = rewrite_response(&ResponseAction::Rewrite(api, version), frame, addrs)?;
                if version < 4 {
                    return Ok(frame);
                }
                edit(api, version, frame, |r: &mut FindCoordinatorResponse| {
                    for c in &mut r.coordinators {
                        if let Some(partner) = self.zone.partner_group(&c.key) {
                            c.key = name(partner);
                        }
                    }
                })
            }
            ApiKey::ListGroups => edit(api, version, frame, |r: &mut ListGroupsResponse| {
                r.groups
                    .retain_mut(|g| match self.zone.partner_group(&g.group_id) {
                        Some(partner) => {
                            g.group_id = GroupId(name(partner));
                            true
                        }
                        None => false,
                    });
            }),
            ApiKey::DescribeGroups => {
                edit(api, version, frame, |r: &mut DescribeGroupsResponse| {
                    for g in &mut r.groups {
                        if let Some(partner) = self.zone.partner_group(&g.group_id) {
                            g.group_id = GroupId(name(partner));
                        }
                    }
                })
            }
            ApiKey::ConsumerGroupDescribe => {
                edit(
                    api,
                    version,
                    frame,
                    |r: &mut ConsumerGroupDescribeResponse| {
                        for g in &mut r.groups {
                            if let Some(partner) = self.zone.partner_group(&g.group_id) {
                                g.group_id = GroupId(name(partner));
                            }
                            // The zone's members subscribe to and are assigned shared topics: their
                            // real names become aliases, anything else is left out.
                            for m in &mut g.members {
                                self.keep_shared(&mut m.subscribed_topic_names, |t| t);
                                for a in [&mut m.assignment, &mut m.target_assignment] {
                                    self.keep_shared(&mut a.topic_partitions, |tp| {
                                        &mut tp.topic_name
                                    });
                                }
                            }
                        }
                    },
                )
            }
            ApiKey::DescribeConfigs => {
                edit(api, version, frame, |r: &mut DescribeConfigsResponse| {
                    for res in &mut r.results {
                        if res.resource_type == TOPIC_RESOURCE {
                            if let Some(alias) = self.zone.alias_of(&res.resource_name) {
                                res.resource_name = name(alias);
                            }
                        }
                    }
                    self.add_resources(r);
                })
            }
            _ => Ok(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::rewrite::testing::{response_frame, NoAddresses};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseTopic;
    use kafka_protocol::messages::ResponseHeader;

    const ZONE: &str = "zone:\n  name: acme\n  listen: 127.0.0.1:9400\n  principals: [User:acme]\n  shares:\n    - {topic: orders.v1, as: partner.orders}\n    - {topic: inbox.v1, as: partner.inbox, produce: true}\n";
    const INBOX_ID: uuid::Uuid = uuid::Uuid::from_u128(3);
    const ORDERS_ID: uuid::Uuid = uuid::Uuid::from_u128(1);
    const SECRET_ID: uuid::Uuid = uuid::Uuid::from_u128(2);

    struct Fixture {
        zone: Arc<Zone>,
        ids: RwLock<HashMap<uuid::Uuid, String>>,
        stats: crate::zone_stats::ZoneStats,
    }

    fn fixture() -> Fixture {
        let set = crate::policy::load::compile_text("z.yaml", ZONE);
        Fixture {
            zone: set.zones[0].clone(),
            ids: RwLock::new(HashMap::from([
                (ORDERS_ID, "orders.v1".to_string()),
                (SECRET_ID, "secret.v1".to_string()),
                (INBOX_ID, "inbox.v1".to_string()),
            ])),
            stats: crate::zone_stats::ZoneStats::new(&prometheus::Registry::new()),
        }
    }

    impl Fixture {
        fn judge<M: Encodable>(&self, api: ApiKey, version: i16, req: &M) -> Verdict {
            let mut h = RequestHeader::default();
            h.request_api_key = api as i16;
            h.request_api_version = version;
            h.correlation_id = 9;
            let frame = join_request(&h, api, version, req).unwrap();
            ZoneRequest {
                zone: &self.zone,
                topic_ids: &self.ids,
                stats: &self.stats,
            }
            .judge(api, &frame, version)
            .unwrap()
        }
    }

    /// The forwarded request (decoded) and the merge of a forwarding verdict.
    fn forwarded<R: Decodable>(
        v: Verdict,
        api: ApiKey,
        version: i16,
    ) -> (R, Option<Box<dyn ResponseMerge>>) {
        let (frame, merge) = match v {
            Verdict::Decision(Decision::ForwardTrimmed { frame, merge }) => (frame, Some(merge)),
            Verdict::Decision(Decision::ForwardEdited(frame)) => (frame, None),
            _ => panic!("not forwarded"),
        };
        let (_, mut body) = split_request(&frame, api, version).unwrap();
        (R::decode(&mut body, version).unwrap(), merge)
    }

    fn merged<R: Decodable, M: Encodable>(
        merge: &dyn ResponseMerge,
        api: ApiKey,
        version: i16,
        upstream: &M,
    ) -> R {
        let frame = response_frame(api, version, 9, upstream);
        let out = merge.merge(frame, &NoAddresses).unwrap();
        let (_, mut body) = crate::protocol::header::split_response(&out, api, version).unwrap();
        R::decode(&mut body, version).unwrap()
    }

    fn answered<R: Decodable>(v: Verdict, api: ApiKey, version: i16) -> R {
        let Verdict::Decision(Decision::Respond(frame)) = v else {
            panic!("not answered");
        };
        let (_, mut body) = crate::protocol::header::split_response(&frame, api, version).unwrap();
        R::decode(&mut body, version).unwrap()
    }

    fn topic(n: &str) -> TopicName {
        TopicName(name(n))
    }

    #[test]
    fn metadata_shows_aliases_only_and_unshared_names_do_not_exist() {
        let f = fixture();
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = true;
        let mut topics = Vec::new();
        for n in ["partner.orders", "secret.v1", "orders.v1"] {
            let mut t = MetadataRequestTopic::default();
            t.name = Some(topic(n));
            topics.push(t);
        }
        req.topics = Some(topics);
        let (sent, merge): (MetadataRequest, _) =
            forwarded(f.judge(ApiKey::Metadata, 12, &req), ApiKey::Metadata, 12);
        let names: Vec<&str> = sent
            .topics
            .iter()
            .flatten()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
            .collect();
        assert_eq!(names, ["orders.v1"], "the real name of the alias only");
        assert!(!sent.allow_auto_topic_creation);
        // The cluster answers for the real topic, and for another one it should not show.
        let mut upstream = MetadataResponse::default();
        for (n, id) in [("orders.v1", ORDERS_ID), ("secret.v1", SECRET_ID)] {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(topic(n));
            t.topic_id = id;
            upstream.topics.push(t);
        }
        let r: MetadataResponse = merged(&*merge.unwrap(), ApiKey::Metadata, 12, &upstream);
        let seen: Vec<(String, i16)> = r
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
            .collect();
        assert_eq!(
            seen,
            [
                ("partner.orders".to_string(), 0),
                ("secret.v1".to_string(), UNKNOWN_TOPIC_OR_PARTITION),
                ("orders.v1".to_string(), UNKNOWN_TOPIC_OR_PARTITION),
            ]
        );
        assert_eq!(
            r.topics[0].topic_id, ORDERS_ID,
            "the real id: Fetch v13 names it"
        );
    }

    #[test]
    fn every_metadata_version_is_rewritten_into_a_request_it_can_encode() {
        let f = fixture();
        for version in 0..=12 {
            let mut req = MetadataRequest::default();
            let mut t = MetadataRequestTopic::default();
            t.name = Some(topic("partner.orders"));
            req.topics = Some(vec![t]);
            let (sent, _): (MetadataRequest, _) = forwarded(
                f.judge(ApiKey::Metadata, version, &req),
                ApiKey::Metadata,
                version,
            );
            assert_eq!(
                sent.topics.unwrap()[0].name.as_ref().unwrap().0.as_str(),
                "orders.v1",
                "v{version}"
            );
        }
    }

    /// Every version of every API a zone rewrites, with a group and a shared topic set where the
    /// version has them: judged without error (a field set that the version lacks would fail to
    /// encode, as FindCoordinator's v0-3 `key` did in v4+ requests).
    #[test]
    fn every_version_of_every_rewritten_api_encodes() {
        use kafka_protocol::protocol::Message;
        let f = fixture();
        fn versions<M: Message>() -> std::ops::RangeInclusive<i16> {
            M::VERSIONS.min..=M::VERSIONS.max
        }
        let ok = |v: Verdict, what: &str| match v {
            Verdict::Decision(_) | Verdict::Produce(_) => {}
            Verdict::Close(why) => panic!("{what}: closed: {why}"),
        };
        let g = || GroupId(name("readers"));
        for v in versions::<JoinGroupRequest>() {
            let mut r = JoinGroupRequest::default();
            r.group_id = g();
            ok(f.judge(ApiKey::JoinGroup, v, &r), "JoinGroup");
        }
        for v in versions::<SyncGroupRequest>() {
            let mut r = SyncGroupRequest::default();
            r.group_id = g();
            ok(f.judge(ApiKey::SyncGroup, v, &r), "SyncGroup");
        }
        for v in versions::<HeartbeatRequest>() {
            let mut r = HeartbeatRequest::default();
            r.group_id = g();
            ok(f.judge(ApiKey::Heartbeat, v, &r), "Heartbeat");
        }
        for v in versions::<LeaveGroupRequest>() {
            let mut r = LeaveGroupRequest::default();
            r.group_id = g();
            ok(f.judge(ApiKey::LeaveGroup, v, &r), "LeaveGroup");
        }
        for v in versions::<DescribeGroupsRequest>() {
            let mut r = DescribeGroupsRequest::default();
            r.groups.push(g());
            ok(f.judge(ApiKey::DescribeGroups, v, &r), "DescribeGroups");
        }
        for v in versions::<FindCoordinatorRequest>() {
            let mut r = FindCoordinatorRequest::default();
            if v < 4 {
                r.key = name("readers");
            } else {
                r.coordinator_keys.push(name("readers"));
            }
            ok(f.judge(ApiKey::FindCoordinator, v, &r), "FindCoordinator");
        }
        for v in versions::<OffsetCommitRequest>() {
            let mut r = OffsetCommitRequest::default();
            r.group_id = g();
            let mut t =
                kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default(
                );
            t.name = topic("partner.orders");
            r.topics.push(t);
            ok(f.judge(ApiKey::OffsetCommit, v, &r), "OffsetCommit");
        }
        for v in versions::<OffsetFetchRequest>() {
            let mut r = OffsetFetchRequest::default();
            if v < 8 {
                r.group_id = g();
            } else {
                let mut gr = kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default();
                gr.group_id = g();
                r.groups.push(gr);
            }
            ok(f.judge(ApiKey::OffsetFetch, v, &r), "OffsetFetch");
        }
        for v in versions::<ListOffsetsRequest>() {
            let mut r = ListOffsetsRequest::default();
            let mut t = ListOffsetsTopic::default();
            t.name = topic("partner.orders");
            r.topics.push(t);
            ok(f.judge(ApiKey::ListOffsets, v, &r), "ListOffsets");
        }
        for v in versions::<FetchRequest>().filter(|v| *v >= 4) {
            let mut r = FetchRequest::default();
            let mut t = FetchTopic::default();
            if v >= 13 {
                t.topic_id = ORDERS_ID;
            } else {
                t.topic = topic("partner.orders");
            }
            r.topics.push(t);
            ok(f.judge(ApiKey::Fetch, v, &r), "Fetch");
        }
        for v in versions::<DescribeConfigsRequest>() {
            let mut r = DescribeConfigsRequest::default();
            let mut res = kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default();
            res.resource_type = TOPIC_RESOURCE;
            res.resource_name = name("partner.orders");
            r.resources.push(res);
            ok(f.judge(ApiKey::DescribeConfigs, v, &r), "DescribeConfigs");
        }
        for v in versions::<ConsumerGroupHeartbeatRequest>() {
            let mut r = ConsumerGroupHeartbeatRequest::default();
            r.group_id = g();
            r.subscribed_topic_names = Some(vec![topic("partner.orders")]);
            ok(
                f.judge(ApiKey::ConsumerGroupHeartbeat, v, &r),
                "ConsumerGroupHeartbeat",
            );
        }
        for v in versions::<ConsumerGroupDescribeRequest>() {
            let mut r = ConsumerGroupDescribeRequest::default();
            r.group_ids.push(g());
            ok(
                f.judge(ApiKey::ConsumerGroupDescribe, v, &r),
                "ConsumerGroupDescribe",
            );
        }
    }

    #[test]
    fn fetch_by_id_passes_shared_ids_untouched_and_refuses_the_rest() {
        let f = fixture();
        let fetch = |ids: &[uuid::Uuid]| {
            let mut req = FetchRequest::default();
            for id in ids {
                let mut t = FetchTopic::default();
                t.topic_id = *id;
                let mut p = FetchPartition::default();
                p.partition = 0;
                t.partitions.push(p);
                req.topics.push(t);
            }
            req
        };
        assert!(matches!(
            f.judge(ApiKey::Fetch, 13, &fetch(&[ORDERS_ID])),
            Verdict::Decision(Decision::Forward)
        ));
        // An unshared topic's real id, and an id never seen: both UNKNOWN_TOPIC_ID.
        let unknown = uuid::Uuid::from_u128(99);
        let (sent, merge): (FetchRequest, _) = forwarded(
            f.judge(ApiKey::Fetch, 13, &fetch(&[ORDERS_ID, SECRET_ID, unknown])),
            ApiKey::Fetch,
            13,
        );
        assert_eq!(sent.topics.len(), 1);
        assert_eq!(sent.topics[0].topic_id, ORDERS_ID);
        let r: FetchResponse = merged(
            &*merge.unwrap(),
            ApiKey::Fetch,
            13,
            &FetchResponse::default(),
        );
        let refused: Vec<(uuid::Uuid, i16)> = r
            .responses
            .iter()
            .map(|t| (t.topic_id, t.partitions[0].error_code))
            .collect();
        assert_eq!(
            refused,
            [(SECRET_ID, UNKNOWN_TOPIC_ID), (unknown, UNKNOWN_TOPIC_ID)]
        );
    }

    #[test]
    fn fetch_by_name_renames_both_ways() {
        let f = fixture();
        let mut req = FetchRequest::default();
        for n in ["partner.orders", "secret.v1"] {
            let mut t = FetchTopic::default();
            t.topic = topic(n);
            let mut p = FetchPartition::default();
            p.partition = 3;
            t.partitions.push(p);
            req.topics.push(t);
        }
        let (sent, merge): (FetchRequest, _) =
            forwarded(f.judge(ApiKey::Fetch, 12, &req), ApiKey::Fetch, 12);
        assert_eq!(sent.topics.len(), 1);
        assert_eq!(sent.topics[0].topic.0.as_str(), "orders.v1");
        let mut upstream = FetchResponse::default();
        let mut t = kafka_protocol::messages::fetch_response::FetchableTopicResponse::default();
        t.topic = topic("orders.v1");
        upstream.responses.push(t);
        let r: FetchResponse = merged(&*merge.unwrap(), ApiKey::Fetch, 12, &upstream);
        let names: Vec<(&str, Option<i16>)> = r
            .responses
            .iter()
            .map(|t| {
                (
                    t.topic.0.as_str(),
                    t.partitions.first().map(|p| p.error_code),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("partner.orders", None),
                ("secret.v1", Some(TOPIC_AUTHORIZATION_FAILED))
            ]
        );
    }

    #[test]
    fn groups_are_prefixed_and_answers_show_the_zones_groups_only() {
        let f = fixture();
        let mut join = JoinGroupRequest::default();
        join.group_id = GroupId(name("readers"));
        let (sent, merge): (JoinGroupRequest, _) =
            forwarded(f.judge(ApiKey::JoinGroup, 9, &join), ApiKey::JoinGroup, 9);
        assert_eq!(sent.group_id.0.as_str(), "zone.acme.readers");
        assert!(merge.is_none(), "the answer names no group");
        // OffsetCommit: prefixed, renamed; an unshared topic refused.
        let mut commit = OffsetCommitRequest::default();
        commit.group_id = GroupId(name("readers"));
        for n in ["partner.orders", "secret.v1"] {
            let mut t =
                kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default(
                );
            t.name = topic(n);
            let mut p = kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = 0;
            p.committed_offset = 42;
            t.partitions.push(p);
            commit.topics.push(t);
        }
        let (sent, merge): (OffsetCommitRequest, _) = forwarded(
            f.judge(ApiKey::OffsetCommit, 8, &commit),
            ApiKey::OffsetCommit,
            8,
        );
        assert_eq!(sent.group_id.0.as_str(), "zone.acme.readers");
        assert_eq!(sent.topics.len(), 1);
        assert_eq!(sent.topics[0].name.0.as_str(), "orders.v1");
        let mut upstream = OffsetCommitResponse::default();
        let mut t =
            kafka_protocol::messages::offset_commit_response::OffsetCommitResponseTopic::default();
        t.name = topic("orders.v1");
        upstream.topics.push(t);
        let r: OffsetCommitResponse = merged(&*merge.unwrap(), ApiKey::OffsetCommit, 8, &upstream);
        let names: Vec<&str> = r.topics.iter().map(|t| t.name.0.as_str()).collect();
        assert_eq!(names, ["partner.orders", "secret.v1"]);
        // OffsetFetch v8: group prefixed out and stripped back; unshared topics left out.
        let mut fetch = OffsetFetchRequest::default();
        let mut g =
            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default();
        g.group_id = GroupId(name("readers"));
        fetch.groups.push(g);
        let (sent, merge): (OffsetFetchRequest, _) = forwarded(
            f.judge(ApiKey::OffsetFetch, 8, &fetch),
            ApiKey::OffsetFetch,
            8,
        );
        assert_eq!(sent.groups[0].group_id.0.as_str(), "zone.acme.readers");
        let mut upstream = OffsetFetchResponse::default();
        let mut rg =
            kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup::default();
        rg.group_id = GroupId(name("zone.acme.readers"));
        for n in ["orders.v1", "secret.v1"] {
            let mut t =
                kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseTopics::default(
                );
            t.name = topic(n);
            rg.topics.push(t);
        }
        upstream.groups.push(rg);
        let r: OffsetFetchResponse = merged(&*merge.unwrap(), ApiKey::OffsetFetch, 8, &upstream);
        assert_eq!(r.groups[0].group_id.0.as_str(), "readers");
        let names: Vec<&str> = r.groups[0]
            .topics
            .iter()
            .map(|t| t.name.0.as_str())
            .collect();
        assert_eq!(names, ["partner.orders"]);
        // OffsetFetch v7, all topics: the answer keeps shared ones.
        let mut old = OffsetFetchRequest::default();
        old.group_id = GroupId(name("readers"));
        let (_, merge): (OffsetFetchRequest, _) = forwarded(
            f.judge(ApiKey::OffsetFetch, 7, &old),
            ApiKey::OffsetFetch,
            7,
        );
        let mut upstream = OffsetFetchResponse::default();
        for n in ["orders.v1", "secret.v1"] {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = topic(n);
            upstream.topics.push(t);
        }
        let r: OffsetFetchResponse = merged(&*merge.unwrap(), ApiKey::OffsetFetch, 7, &upstream);
        let names: Vec<&str> = r.topics.iter().map(|t| t.name.0.as_str()).collect();
        assert_eq!(names, ["partner.orders"]);
        // ListGroups: the zone's groups only, without the prefix.
        let (_, merge): (kafka_protocol::messages::ListGroupsRequest, _) = forwarded(
            f.judge(
                ApiKey::ListGroups,
                4,
                &kafka_protocol::messages::ListGroupsRequest::default(),
            ),
            ApiKey::ListGroups,
            4,
        );
        let mut upstream = ListGroupsResponse::default();
        for g in ["zone.acme.readers", "billing-internal", "zone.other.x"] {
            let mut l = kafka_protocol::messages::list_groups_response::ListedGroup::default();
            l.group_id = GroupId(name(g));
            upstream.groups.push(l);
        }
        let r: ListGroupsResponse = merged(&*merge.unwrap(), ApiKey::ListGroups, 4, &upstream);
        let groups: Vec<&str> = r.groups.iter().map(|g| g.group_id.0.as_str()).collect();
        assert_eq!(groups, ["readers"]);
        assert_eq!(f.stats.usage("acme").active_groups, 1);
        // ConsumerGroupDescribe (KIP-848): prefixed, and its members' topics shown as aliases.
        let mut describe = ConsumerGroupDescribeRequest::default();
        describe.group_ids.push(GroupId(name("readers")));
        let (sent, merge): (ConsumerGroupDescribeRequest, _) = forwarded(
            f.judge(ApiKey::ConsumerGroupDescribe, 0, &describe),
            ApiKey::ConsumerGroupDescribe,
            0,
        );
        assert_eq!(sent.group_ids[0].0.as_str(), "zone.acme.readers");
        let mut upstream = ConsumerGroupDescribeResponse::default();
        let mut g =
            kafka_protocol::messages::consumer_group_describe_response::DescribedGroup::default();
        g.group_id = GroupId(name("zone.acme.readers"));
        let mut m = kafka_protocol::messages::consumer_group_describe_response::Member::default();
        m.subscribed_topic_names = vec![topic("orders.v1")];
        let mut tp =
            kafka_protocol::messages::consumer_group_describe_response::TopicPartitions::default();
        tp.topic_name = topic("orders.v1");
        m.assignment.topic_partitions.push(tp);
        g.members.push(m);
        upstream.groups.push(g);
        let r: ConsumerGroupDescribeResponse = merged(
            &*merge.unwrap(),
            ApiKey::ConsumerGroupDescribe,
            0,
            &upstream,
        );
        assert_eq!(r.groups[0].group_id.0.as_str(), "readers");
        assert_eq!(
            r.groups[0].members[0].subscribed_topic_names[0].0.as_str(),
            "partner.orders"
        );
        assert_eq!(
            r.groups[0].members[0].assignment.topic_partitions[0]
                .topic_name
                .0
                .as_str(),
            "partner.orders"
        );
    }

    #[test]
    fn find_coordinator_prefixes_the_key_of_its_version() {
        let f = fixture();
        let mut v4 = FindCoordinatorRequest::default();
        v4.coordinator_keys = vec![name("readers"), name("writers")];
        let (sent, merge): (FindCoordinatorRequest, _) = forwarded(
            f.judge(ApiKey::FindCoordinator, 6, &v4),
            ApiKey::FindCoordinator,
            6,
        );
        let keys: Vec<&str> = sent.coordinator_keys.iter().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["zone.acme.readers", "zone.acme.writers"]);
        assert!(sent.key.is_empty(), "no v0-3 key in a v4+ request");
        let mut upstream = FindCoordinatorResponse::default();
        let mut c = Coordinator::default();
        c.key = name("zone.acme.readers");
        c.node_id = kafka_protocol::messages::BrokerId(-1);
        upstream.coordinators.push(c);
        let r: FindCoordinatorResponse =
            merged(&*merge.unwrap(), ApiKey::FindCoordinator, 6, &upstream);
        assert_eq!(r.coordinators[0].key.as_str(), "readers");
        let mut v3 = FindCoordinatorRequest::default();
        v3.key = name("readers");
        let (sent, _): (FindCoordinatorRequest, _) = forwarded(
            f.judge(ApiKey::FindCoordinator, 3, &v3),
            ApiKey::FindCoordinator,
            3,
        );
        assert_eq!(sent.key.as_str(), "zone.acme.readers");
    }

    #[test]
    fn list_offsets_of_unshared_topics_alone_is_answered_here() {
        let f = fixture();
        let mut req = ListOffsetsRequest::default();
        let mut t = ListOffsetsTopic::default();
        t.name = topic("secret.v1");
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 0;
        t.partitions.push(p);
        req.topics.push(t);
        let r: ListOffsetsResponse = answered(
            f.judge(ApiKey::ListOffsets, 7, &req),
            ApiKey::ListOffsets,
            7,
        );
        assert_eq!(r.topics[0].name.0.as_str(), "secret.v1");
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            TOPIC_AUTHORIZATION_FAILED
        );
    }

    #[test]
    fn a_share_with_produce_takes_the_partners_records_renamed_and_answers_by_alias() {
        let f = fixture();
        let produce = |topics: &[&str]| {
            let mut r = ProduceRequest::default();
            r.acks = -1;
            for n in topics {
                let mut t = kafka_protocol::messages::produce_request::TopicProduceData::default();
                t.name = topic(n);
                t.partition_data.push(Default::default());
                r.topic_data.push(t);
            }
            r
        };
        let Verdict::Produce(frame) = f.judge(ApiKey::Produce, 9, &produce(&["partner.inbox"]))
        else {
            panic!("a writable share goes on");
        };
        let (_, mut body) = split_request(&frame, ApiKey::Produce, 9).unwrap();
        let sent = ProduceRequest::decode(&mut body, 9).unwrap();
        assert_eq!(sent.topic_data[0].name.0.as_str(), "inbox.v1");
        // The answer names the alias again.
        let mut upstream = ProduceResponse::default();
        let mut t = TopicProduceResponse::default();
        t.name = topic("inbox.v1");
        upstream.responses.push(t);
        let out =
            rename_produce_answer(&f.zone, response_frame(ApiKey::Produce, 9, 9, &upstream), 9)
                .unwrap();
        let (_, mut body) =
            crate::protocol::header::split_response(&out, ApiKey::Produce, 9).unwrap();
        let r = ProduceResponse::decode(&mut body, 9).unwrap();
        assert_eq!(r.responses[0].name.0.as_str(), "partner.inbox");
        // A read-only share in the same request: refused whole, by the partner's names.
        let r: ProduceResponse = answered(
            f.judge(
                ApiKey::Produce,
                9,
                &produce(&["partner.inbox", "partner.orders"]),
            ),
            ApiKey::Produce,
            9,
        );
        let names: Vec<&str> = r.responses.iter().map(|t| t.name.0.as_str()).collect();
        assert_eq!(names, ["partner.inbox", "partner.orders"]);
        assert!(r
            .responses
            .iter()
            .all(|t| t.partition_responses[0].error_code == TOPIC_AUTHORIZATION_FAILED));
    }

    #[test]
    fn a_zone_is_read_only_and_serves_no_other_api() {
        let f = fixture();
        let mut produce = ProduceRequest::default();
        produce.acks = -1;
        let mut t = kafka_protocol::messages::produce_request::TopicProduceData::default();
        t.name = topic("partner.orders");
        let mut p = kafka_protocol::messages::produce_request::PartitionProduceData::default();
        p.index = 0;
        t.partition_data.push(p);
        produce.topic_data.push(t);
        let r: ProduceResponse =
            answered(f.judge(ApiKey::Produce, 9, &produce), ApiKey::Produce, 9);
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            TOPIC_AUTHORIZATION_FAILED
        );
        produce.acks = 0;
        assert!(matches!(
            f.judge(ApiKey::Produce, 9, &produce),
            Verdict::Close(_)
        ));
        // An idempotent producer may get its id (the zone writes somewhere); a transactional one
        // may not.
        let mut init = kafka_protocol::messages::InitProducerIdRequest::default();
        init.transaction_timeout_ms = 60_000;
        init.transactional_id = None;
        assert!(matches!(
            f.judge(ApiKey::InitProducerId, 4, &init),
            Verdict::Decision(Decision::Forward)
        ));
        init.transactional_id = Some(kafka_protocol::messages::TransactionalId(name("t")));
        let r: InitProducerIdResponse = answered(
            f.judge(ApiKey::InitProducerId, 4, &init),
            ApiKey::InitProducerId,
            4,
        );
        assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);
        let mut find = FindCoordinatorRequest::default();
        find.key_type = 1;
        find.coordinator_keys.push(name("txn"));
        let r: FindCoordinatorResponse = answered(
            f.judge(ApiKey::FindCoordinator, 4, &find),
            ApiKey::FindCoordinator,
            4,
        );
        assert_eq!(
            r.coordinators[0].error_code,
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        );
        assert!(matches!(
            f.judge(
                ApiKey::DeleteRecords,
                2,
                &kafka_protocol::messages::DeleteRecordsRequest::default()
            ),
            Verdict::Close(_)
        ));
        // ConsumerGroupHeartbeat: a subscription to an unshared topic is refused whole.
        let mut hb = ConsumerGroupHeartbeatRequest::default();
        hb.group_id = GroupId(name("readers"));
        hb.subscribed_topic_names = Some(vec![topic("secret.v1")]);
        let r: kafka_protocol::messages::ConsumerGroupHeartbeatResponse = answered(
            f.judge(ApiKey::ConsumerGroupHeartbeat, 0, &hb),
            ApiKey::ConsumerGroupHeartbeat,
            0,
        );
        assert_eq!(r.error_code, TOPIC_AUTHORIZATION_FAILED);
        hb.subscribed_topic_names = Some(vec![topic("partner.orders")]);
        let (sent, _): (ConsumerGroupHeartbeatRequest, _) = forwarded(
            f.judge(ApiKey::ConsumerGroupHeartbeat, 0, &hb),
            ApiKey::ConsumerGroupHeartbeat,
            0,
        );
        assert_eq!(sent.group_id.0.as_str(), "zone.acme.readers");
        assert_eq!(
            sent.subscribed_topic_names.unwrap()[0].0.as_str(),
            "orders.v1"
        );
    }

    #[test]
    fn describe_configs_renames_shared_topics_and_refuses_the_rest() {
        let f = fixture();
        let mut req = DescribeConfigsRequest::default();
        for (kind, n) in [
            (TOPIC_RESOURCE, "partner.orders"),
            (TOPIC_RESOURCE, "secret.v1"),
            (4, "1"),
        ] {
            let mut r = kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default();
            r.resource_type = kind;
            r.resource_name = name(n);
            req.resources.push(r);
        }
        let (sent, merge): (DescribeConfigsRequest, _) = forwarded(
            f.judge(ApiKey::DescribeConfigs, 4, &req),
            ApiKey::DescribeConfigs,
            4,
        );
        assert_eq!(sent.resources.len(), 1);
        assert_eq!(sent.resources[0].resource_name.as_str(), "orders.v1");
        let mut upstream = DescribeConfigsResponse::default();
        let mut res = DescribeConfigsResult::default();
        res.resource_type = TOPIC_RESOURCE;
        res.resource_name = name("orders.v1");
        upstream.results.push(res);
        let r: DescribeConfigsResponse =
            merged(&*merge.unwrap(), ApiKey::DescribeConfigs, 4, &upstream);
        let seen: Vec<(&str, i16)> = r
            .results
            .iter()
            .map(|r| (r.resource_name.as_str(), r.error_code))
            .collect();
        assert_eq!(
            seen,
            [
                ("partner.orders", 0),
                ("secret.v1", TOPIC_AUTHORIZATION_FAILED),
                ("1", CLUSTER_AUTHORIZATION_FAILED)
            ]
        );
        let _ = ResponseHeader::default();
    }
}
