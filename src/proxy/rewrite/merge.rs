//! The merges of partly refused requests: meshgate's own answers for what it refused, and the
//! upstream's for what it forwarded, in the request's order (Produce, CreateTopics,
//! CreatePartitions, AlterConfigs, IncrementalAlterConfigs). `enforce` and `topic_admin` hand
//! over their verdicts; every response they imply is written here, whether it merges an upstream
//! answer or stands alone because nothing was forwarded.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    AlterConfigsResponse, ApiKey, CreatePartitionsResponse, CreateTopicsResponse,
    IncrementalAlterConfigsResponse, ProduceResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{BrokerAddresses, ResponseMerge, RewriteError};
use crate::policy::judge::Rejection;
use crate::protocol::header::{join_response, split_response, undecodable, HeaderError};

/// A Produce request with refused partitions.
#[derive(Debug)]
pub struct ProduceMerge {
    version: i16,
    /// Request order: topic → partition indexes.
    order: Vec<(StrBytes, Vec<i32>)>,
    rejected: HashMap<(StrBytes, i32), Rejection>,
}

impl ProduceMerge {
    pub fn new(
        version: i16,
        order: Vec<(StrBytes, Vec<i32>)>,
        rejected: HashMap<(StrBytes, i32), Rejection>,
    ) -> Self {
        Self {
            version,
            order,
            rejected,
        }
    }

    /// Answers a refused partition with no error (its records went to a dead-letter topic and
    /// the contract says `respond: success`).
    pub fn acknowledge(&mut self, key: &(StrBytes, i32)) {
        if let Some(r) = self.rejected.get_mut(key) {
            r.error_code = 0;
            r.message.clear();
            r.record_errors.clear();
        }
    }

    /// Appends `suffix` to a refused partition's message.
    pub fn note(&mut self, key: &(StrBytes, i32), suffix: &str) {
        if let Some(r) = self.rejected.get_mut(key) {
            r.message.push_str(suffix);
        }
    }

    /// Answers a refused partition with `code` and `message` instead, without record errors.
    pub fn replace(&mut self, key: &(StrBytes, i32), code: i16, message: &str) {
        if let Some(r) = self.rejected.get_mut(key) {
            r.error_code = code;
            r.message = message.to_string();
            r.record_errors.clear();
        }
    }

    /// The whole response when every partition was refused and nothing was forwarded.
    pub fn refused_alone(&self, correlation_id: i32) -> Result<Bytes, HeaderError> {
        let response = merge_produce_response(self, ProduceResponse::default());
        encode_response(correlation_id, ApiKey::Produce, self.version, &response)
    }
}

/// A CreateTopics request with refused topics: (error code, message) by name.
#[derive(Debug)]
pub struct CreateTopicsMerge {
    version: i16,
    order: Vec<StrBytes>,
    rejected: HashMap<StrBytes, (i16, String)>,
}

impl CreateTopicsMerge {
    pub fn new(
        version: i16,
        order: Vec<StrBytes>,
        rejected: HashMap<StrBytes, (i16, String)>,
    ) -> Self {
        Self {
            version,
            order,
            rejected,
        }
    }

    /// The whole response when every topic was refused and nothing was forwarded.
    pub fn refused_alone(&self, correlation_id: i32) -> Result<Bytes, HeaderError> {
        let response = merge_create_topics_response(self, CreateTopicsResponse::default());
        encode_response(
            correlation_id,
            ApiKey::CreateTopics,
            self.version,
            &response,
        )
    }
}

fn partition_error(r: &Rejection, version: i16) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.error_code = r.error_code;
    p.base_offset = -1;
    p.log_append_time_ms = -1;
    p.log_start_offset = -1;
    if version >= 8 && r.error_code != 0 {
        p.error_message = Some(StrBytes::from_string(r.message.clone()));
        p.record_errors = r
            .record_errors
            .iter()
            .map(|(i, m)| {
                let mut e = BatchIndexAndErrorMessage::default();
                e.batch_index = *i;
                e.batch_index_error_message = Some(StrBytes::from_string(m.clone()));
                e
            })
            .collect();
    }
    p
}

/// Merges the upstream response with meshgate's rejections, in request order.
fn merge_produce_response(m: &ProduceMerge, upstream: ProduceResponse) -> ProduceResponse {
    let mut from_upstream: HashMap<(StrBytes, i32), PartitionProduceResponse> = HashMap::new();
    for t in upstream.responses {
        for p in t.partition_responses {
            from_upstream.insert((t.name.0.clone(), p.index), p);
        }
    }
    let mut out = ProduceResponse::default();
    out.throttle_time_ms = upstream.throttle_time_ms;
    out.node_endpoints = upstream.node_endpoints;
    for (topic, partitions) in &m.order {
        let mut t = TopicProduceResponse::default();
        t.name = topic.clone().into();
        for &index in partitions {
            let key = (topic.clone(), index);
            let mut p = m
                .rejected
                .get(&key)
                .map(|r| partition_error(r, m.version))
                .or_else(|| from_upstream.remove(&key))
                .unwrap_or_else(|| {
                    let mut p = PartitionProduceResponse::default();
                    p.error_code = -1; // UNKNOWN_SERVER_ERROR: the broker did not answer for it
                    p.base_offset = -1;
                    p
                });
            p.index = index;
            t.partition_responses.push(p);
        }
        out.responses.push(t);
    }
    out
}

impl ResponseMerge for ProduceMerge {
    fn merge(&self, frame: Bytes, addrs: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        merge_produce(self, frame, addrs)
    }
}

impl ResponseMerge for CreateTopicsMerge {
    fn merge(&self, frame: Bytes, _: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        merge_create_topics(self, frame)
    }
}

/// Merges an upstream Produce response frame with the rejections of its request.
fn merge_produce(
    m: &ProduceMerge,
    frame: Bytes,
    addrs: &dyn BrokerAddresses,
) -> Result<Bytes, RewriteError> {
    let err = |reason: String| RewriteError {
        api: ApiKey::Produce,
        version: m.version,
        reason,
    };
    let (header, mut body) =
        split_response(&frame, ApiKey::Produce, m.version).map_err(|e| err(e.to_string()))?;
    let upstream = ProduceResponse::decode(&mut body, m.version).map_err(|e| err(e.to_string()))?;
    let mut merged = merge_produce_response(m, upstream);
    super::rewrite_node_endpoints(&mut merged.node_endpoints, addrs);
    encode_response(header.correlation_id, ApiKey::Produce, m.version, &merged)
        .map_err(|e| err(e.to_string()))
}

fn merge_create_topics_response(
    m: &CreateTopicsMerge,
    upstream: CreateTopicsResponse,
) -> CreateTopicsResponse {
    let mut from_upstream: HashMap<StrBytes, CreatableTopicResult> = upstream
        .topics
        .into_iter()
        .map(|t| (t.name.0.clone(), t))
        .collect();
    let mut out = CreateTopicsResponse::default();
    out.throttle_time_ms = upstream.throttle_time_ms;
    for name in &m.order {
        let refused = m.rejected.get(name).map(|(code, message)| {
            let mut r = CreatableTopicResult::default();
            r.name = name.clone().into();
            r.error_code = *code;
            r.error_message = Some(StrBytes::from_string(message.clone()));
            r
        });
        if let Some(r) = refused.or_else(|| from_upstream.remove(name)) {
            out.topics.push(r);
        }
    }
    out
}

/// Merges an upstream CreateTopics response frame with the rejections of its request.
fn merge_create_topics(m: &CreateTopicsMerge, frame: Bytes) -> Result<Bytes, RewriteError> {
    let api = ApiKey::CreateTopics;
    let err = |reason: String| RewriteError {
        api,
        version: m.version,
        reason,
    };
    let (header, mut body) =
        split_response(&frame, api, m.version).map_err(|e| err(e.to_string()))?;
    let upstream =
        CreateTopicsResponse::decode(&mut body, m.version).map_err(|e| err(e.to_string()))?;
    let merged = merge_create_topics_response(m, upstream);
    encode_response(header.correlation_id, api, m.version, &merged).map_err(|e| err(e.to_string()))
}

/// meshgate's refusals of some resources of an admin request, to merge into the upstream
/// response in request order.
#[derive(Debug)]
pub struct AdminMerge {
    api: ApiKey,
    version: i16,
    /// Every resource of the request, in order: (resource type, name).
    order: Vec<(i8, StrBytes)>,
    /// The refused ones: error code and message.
    rejected: HashMap<(i8, StrBytes), (i16, String)>,
}

impl AdminMerge {
    pub fn new(
        api: ApiKey,
        version: i16,
        order: Vec<(i8, StrBytes)>,
        rejected: HashMap<(i8, StrBytes), (i16, String)>,
    ) -> Self {
        Self {
            api,
            version,
            order,
            rejected,
        }
    }

    /// The whole response when every resource was refused and nothing was forwarded.
    pub fn refused_alone(&self, correlation_id: i32) -> Result<Bytes, HeaderError> {
        merged(self, correlation_id, None)
    }
}

impl ResponseMerge for AdminMerge {
    fn merge(&self, frame: Bytes, _: &dyn BrokerAddresses) -> Result<Bytes, RewriteError> {
        merge_admin(self, frame).map_err(|e| RewriteError {
            api: self.api,
            version: self.version,
            reason: e.to_string(),
        })
    }
}

/// Merges an upstream response frame with the refusals of its request.
fn merge_admin(m: &AdminMerge, frame: Bytes) -> Result<Bytes, HeaderError> {
    let (header, body) = split_response(&frame, m.api, m.version)?;
    merged(m, header.correlation_id, Some(body))
}

/// The response: the upstream's answers (from `body`, when there is one) and meshgate's, in
/// request order.
fn merged(m: &AdminMerge, correlation_id: i32, body: Option<Bytes>) -> Result<Bytes, HeaderError> {
    let (api, version) = (m.api, m.version);
    match api {
        ApiKey::CreatePartitions => {
            let upstream = match body {
                Some(mut b) => CreatePartitionsResponse::decode(&mut b, version)
                    .map_err(|e| undecodable(api, version, e))?,
                None => CreatePartitionsResponse::default(),
            };
            let mut by_name: HashMap<StrBytes, CreatePartitionsTopicResult> = upstream
                .results
                .iter()
                .map(|r| (r.name.0.clone(), r.clone()))
                .collect();
            let mut out = upstream;
            out.results = m
                .order
                .iter()
                .filter_map(|key| match m.rejected.get(key) {
                    Some((code, message)) => {
                        let mut r = CreatePartitionsTopicResult::default();
                        r.name = key.1.clone().into();
                        r.error_code = *code;
                        r.error_message = Some(StrBytes::from_string(message.clone()));
                        Some(r)
                    }
                    None => by_name.remove(&key.1),
                })
                .collect();
            encode_response(correlation_id, api, version, &out)
        }
        ApiKey::AlterConfigs => {
            let upstream = match body {
                Some(mut b) => AlterConfigsResponse::decode(&mut b, version)
                    .map_err(|e| undecodable(api, version, e))?,
                None => AlterConfigsResponse::default(),
            };
            let mut out = upstream.clone();
            out.responses = merge_resources(m, upstream.responses);
            encode_response(correlation_id, api, version, &out)
        }
        ApiKey::IncrementalAlterConfigs => {
            let upstream = match body {
                Some(mut b) => IncrementalAlterConfigsResponse::decode(&mut b, version)
                    .map_err(|e| undecodable(api, version, e))?,
                None => IncrementalAlterConfigsResponse::default(),
            };
            // The two APIs' resource responses have the same fields.
            let responses = upstream
                .responses
                .iter()
                .map(|r| {
                    let mut a = AlterConfigsResourceResponse::default();
                    a.error_code = r.error_code;
                    a.error_message = r.error_message.clone();
                    a.resource_type = r.resource_type;
                    a.resource_name = r.resource_name.clone();
                    a
                })
                .collect();
            let mut out = upstream;
            out.responses = merge_resources(m, responses)
                .into_iter()
                .map(|a| {
                    let mut r = kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                    r.error_code = a.error_code;
                    r.error_message = a.error_message;
                    r.resource_type = a.resource_type;
                    r.resource_name = a.resource_name;
                    r
                })
                .collect();
            encode_response(correlation_id, api, version, &out)
        }
        _ => Err(undecodable(api, version, "not an admin merge")),
    }
}

fn merge_resources(
    m: &AdminMerge,
    upstream: Vec<AlterConfigsResourceResponse>,
) -> Vec<AlterConfigsResourceResponse> {
    let mut by_key: HashMap<(i8, StrBytes), AlterConfigsResourceResponse> = upstream
        .into_iter()
        .map(|r| ((r.resource_type, r.resource_name.clone()), r))
        .collect();
    m.order
        .iter()
        .filter_map(|key| match m.rejected.get(key) {
            Some((code, message)) => {
                let mut r = AlterConfigsResourceResponse::default();
                r.resource_type = key.0;
                r.resource_name = key.1.clone();
                r.error_code = *code;
                r.error_message = Some(StrBytes::from_string(message.clone()));
                Some(r)
            }
            None => by_key.remove(key),
        })
        .collect()
}

pub(crate) fn encode_response<M: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &M,
) -> Result<Bytes, HeaderError> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    join_response(&header, api, version, body).map_err(|e| undecodable(api, version, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;

    fn refusal() -> Rejection {
        Rejection {
            error_code: 87,
            message: "meshgate: record 0 breaks rule".into(),
            record_errors: vec![(0, "bad".into())],
            policy: "contract",
            rule: "order_total > 0".into(),
        }
    }

    fn upstream_partition(index: i32, offset: i64) -> PartitionProduceResponse {
        let mut p = PartitionProduceResponse::default();
        p.index = index;
        p.base_offset = offset;
        p
    }

    fn produce_merge(version: i16) -> ProduceMerge {
        let t = StrBytes::from_static_str("shop.orders.v1");
        ProduceMerge::new(
            version,
            vec![
                (t.clone(), vec![0, 1, 2]),
                (StrBytes::from_static_str("shop.other.v1"), vec![5]),
            ],
            HashMap::from([((t, 1), refusal())]),
        )
    }

    #[test]
    fn a_produce_response_is_merged_in_request_order() {
        let m = produce_merge(9);
        let mut upstream = ProduceResponse::default();
        upstream.throttle_time_ms = 7;
        let mut t = TopicProduceResponse::default();
        t.name = TopicName(StrBytes::from_static_str("shop.orders.v1"));
        // The broker answers in its own order.
        t.partition_responses = vec![upstream_partition(2, 20), upstream_partition(0, 10)];
        upstream.responses = vec![t];
        let out = merge_produce_response(&m, upstream);
        assert_eq!(out.throttle_time_ms, 7);
        let ps = &out.responses[0].partition_responses;
        assert_eq!(
            ps.iter()
                .map(|p| (p.index, p.error_code, p.base_offset))
                .collect::<Vec<_>>(),
            vec![(0, 0, 10), (1, 87, -1), (2, 0, 20)]
        );
        assert_eq!(
            ps[1].error_message.as_deref(),
            Some("meshgate: record 0 breaks rule")
        );
        assert_eq!(ps[1].record_errors.len(), 1);
        assert_eq!(ps[1].record_errors[0].batch_index, 0);
        // A forwarded partition the broker did not answer for is not made up as a success.
        let other = &out.responses[1].partition_responses[0];
        assert_eq!((other.index, other.error_code), (5, -1));
    }

    #[test]
    fn versions_before_8_carry_no_message_or_record_errors() {
        let out = merge_produce_response(&produce_merge(7), ProduceResponse::default());
        let refused = &out.responses[0].partition_responses[1];
        assert_eq!(refused.error_code, 87);
        assert!(refused.error_message.is_none() && refused.record_errors.is_empty());
    }

    #[test]
    fn a_wholly_refused_produce_is_answered_alone() {
        let t = StrBytes::from_static_str("shop.orders.v1");
        let m = ProduceMerge::new(
            9,
            vec![(t.clone(), vec![3])],
            HashMap::from([((t, 3), refusal())]),
        );
        let frame = m.refused_alone(42).unwrap();
        let (header, mut body) = split_response(&frame, ApiKey::Produce, 9).unwrap();
        assert_eq!(header.correlation_id, 42);
        let out = ProduceResponse::decode(&mut body, 9).unwrap();
        let p = &out.responses[0].partition_responses[0];
        assert_eq!((p.index, p.error_code), (3, 87));
    }

    #[test]
    fn a_create_topics_response_is_merged_in_request_order() {
        let name = |s: &'static str| StrBytes::from_static_str(s);
        let m = CreateTopicsMerge::new(
            7,
            vec![name("a"), name("b"), name("c")],
            HashMap::from([(name("b"), (44, "naming".to_string()))]),
        );
        let mut upstream = CreateTopicsResponse::default();
        for n in ["c", "a"] {
            let mut r = CreatableTopicResult::default();
            r.name = TopicName(name(n));
            upstream.topics.push(r);
        }
        let out = merge_create_topics_response(&m, upstream);
        assert_eq!(
            out.topics
                .iter()
                .map(|t| (t.name.0.to_string(), t.error_code))
                .collect::<Vec<_>>(),
            vec![("a".into(), 0), ("b".into(), 44), ("c".into(), 0)]
        );
        assert_eq!(out.topics[1].error_message.as_deref(), Some("naming"));
    }
}
