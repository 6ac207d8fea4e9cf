//! Response rewriting: every edit of an upstream response goes through [`rewrite_response`], and
//! every response meshgate writes for a governed request is built in this module. Addresses and
//! ApiVersions are edited here; the merges of partly refused requests (and the answers to wholly
//! refused ones) are in [`merge`], behind the [`ResponseMerge`] trait.
//!
//! - Every broker address (Metadata, FindCoordinator, DescribeCluster, Produce `node_endpoints`)
//!   becomes `advertised_host:gateway_port`, so a client never learns an upstream address.
//! - ApiVersions is narrowed to what meshgate handles (see [`crate::protocol::versions`]).
//!
//! A response that needs no change is returned as the original bytes. A response that should be
//! rewritten but does not decode is an error: passing it on could leak an upstream address.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, FindCoordinatorResponse,
    MetadataResponse, ProduceResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::protocol::header::{join_response, split_response};

pub mod merge;
pub mod read_merge;
use crate::protocol::versions::advertised_range;

/// What to do with the response to a forwarded request.
#[derive(Debug)]
pub enum ResponseAction {
    /// Forward the upstream bytes as they are.
    Passthrough,
    /// Rewrite the response of this API at this version.
    Rewrite(ApiKey, i16),
    /// Merge meshgate's results for what it rejected into the upstream response.
    Merge(Box<dyn ResponseMerge>),
    /// A Metadata response at this version, rewritten as usual, without the topics `shown`
    /// refuses (`access.hide_unauthorized_topics`).
    MetadataShowing(i16, TopicFilter),
}

/// A predicate on topic names, judged for the principal of one request: whether a Metadata
/// answer shows a topic, or whether an OffsetFetch answer may list it.
#[derive(Clone)]
pub struct TopicFilter(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicFilter")
    }
}

impl ResponseAction {
    /// The action for a request of `api` at `version`.
    pub fn for_request(api: Option<ApiKey>, version: i16) -> Self {
        match api {
            Some(
                a @ (ApiKey::ApiVersions
                | ApiKey::Metadata
                | ApiKey::FindCoordinator
                | ApiKey::DescribeCluster),
            ) => Self::Rewrite(a, version),
            // Produce responses carry node endpoints from v10 (KIP-951).
            Some(ApiKey::Produce) if version >= 10 => Self::Rewrite(ApiKey::Produce, version),
            _ => Self::Passthrough,
        }
    }
}

/// meshgate's own results for the parts of a request it refused, to merge into the upstream's
/// response to the rest, in request order. Implemented beside each judged API (`enforce` for
/// Produce and CreateTopics, `topic_admin` for the admin APIs); this module only calls it, so
/// it depends on none of them.
pub trait ResponseMerge: std::fmt::Debug + Send + Sync {
    fn merge(&self, frame: Bytes, addrs: &dyn BrokerAddresses) -> Result<Bytes, RewriteError>;
}

/// Maps upstream broker identities to the addresses clients must see.
pub trait BrokerAddresses {
    fn advertised_host(&self) -> &str;
    /// The gateway port standing for `node_id`, now at `host:port` upstream, or `None` when
    /// meshgate does not serve one for it (the broker must then not be advertised at all).
    fn gateway_port(&self, node_id: i32, host: &str, port: i32) -> Option<i32>;
    /// A Metadata response named topic `name` with id `id`.
    fn saw_topic_id(&self, _name: &str, _id: uuid::Uuid) {}
}

#[derive(Debug, thiserror::Error)]
#[error("cannot rewrite {api:?} v{version} response: {reason}")]
pub struct RewriteError {
    pub api: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// Applies `action` to an upstream response frame (payload without the size prefix).
pub fn rewrite_response(
    action: &ResponseAction,
    frame: Bytes,
    addrs: &dyn BrokerAddresses,
) -> Result<Bytes, RewriteError> {
    let (api, version) = match action {
        ResponseAction::Passthrough => return Ok(frame),
        ResponseAction::Merge(m) => return m.merge(frame, addrs),
        ResponseAction::Rewrite(api, version) => (*api, *version),
        ResponseAction::MetadataShowing(version, _) => (ApiKey::Metadata, *version),
    };
    let err = |reason: String| RewriteError {
        api,
        version,
        reason,
    };
    let (header, mut body) =
        split_response(&frame, api, version).map_err(|e| err(e.to_string()))?;
    match api {
        ApiKey::Metadata => {
            let mut r =
                MetadataResponse::decode(&mut body, version).map_err(|e| err(e.to_string()))?;
            r.brokers.retain_mut(|b| {
                let port = addrs.gateway_port(b.node_id.0, &b.host, b.port);
                b.port = port.unwrap_or(-1);
                b.host = host(addrs);
                port.is_some()
            });
            for t in &r.topics {
                if let Some(name) = &t.name {
                    addrs.saw_topic_id(name.as_str(), t.topic_id);
                }
            }
            if let ResponseAction::MetadataShowing(_, shown) = action {
                r.topics
                    .retain(|t| t.name.as_ref().is_none_or(|n| (shown.0)(n.as_str())));
            }
            join_response(&header, api, version, &r).map_err(|e| err(e.to_string()))
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorResponse::decode(&mut body, version)
                .map_err(|e| err(e.to_string()))?;
            // v0-3 answer one coordinator in top-level fields; v4+ a list (KIP-699).
            if version < 4 && r.node_id.0 >= 0 {
                match addrs.gateway_port(r.node_id.0, &r.host, r.port) {
                    Some(port) => {
                        r.port = port;
                        r.host = host(addrs);
                    }
                    None => {
                        r.error_code = COORDINATOR_NOT_AVAILABLE;
                        (r.node_id.0, r.host, r.port) = (-1, StrBytes::default(), -1);
                    }
                }
            }
            for c in &mut r.coordinators {
                if c.node_id.0 >= 0 {
                    match addrs.gateway_port(c.node_id.0, &c.host, c.port) {
                        Some(port) => {
                            c.port = port;
                            c.host = host(addrs);
                        }
                        None => {
                            c.error_code = COORDINATOR_NOT_AVAILABLE;
                            (c.node_id.0, c.host, c.port) = (-1, StrBytes::default(), -1);
                        }
                    }
                }
            }
            join_response(&header, api, version, &r).map_err(|e| err(e.to_string()))
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterResponse::decode(&mut body, version)
                .map_err(|e| err(e.to_string()))?;
            r.brokers.retain_mut(|b| {
                let port = addrs.gateway_port(b.broker_id.0, &b.host, b.port);
                b.port = port.unwrap_or(-1);
                b.host = host(addrs);
                port.is_some()
            });
            join_response(&header, api, version, &r).map_err(|e| err(e.to_string()))
        }
        ApiKey::Produce => {
            let mut r =
                ProduceResponse::decode(&mut body, version).map_err(|e| err(e.to_string()))?;
            if r.node_endpoints.is_empty() {
                return Ok(frame);
            }
            rewrite_node_endpoints(&mut r.node_endpoints, addrs);
            join_response(&header, api, version, &r).map_err(|e| err(e.to_string()))
        }
        ApiKey::ApiVersions => rewrite_api_versions(&header, body, version),
        _ => Ok(frame),
    }
}

/// COORDINATOR_NOT_AVAILABLE: retriable; the client asks again.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Produce `node_endpoints` (KIP-951) at gateway addresses; endpoints meshgate does not serve
/// are dropped.
pub fn rewrite_node_endpoints(
    endpoints: &mut Vec<kafka_protocol::messages::produce_response::NodeEndpoint>,
    addrs: &dyn BrokerAddresses,
) {
    endpoints.retain_mut(|n| {
        let port = addrs.gateway_port(n.node_id.0, &n.host, n.port);
        n.port = port.unwrap_or(-1);
        n.host = host(addrs);
        port.is_some()
    });
}

fn host(addrs: &dyn BrokerAddresses) -> StrBytes {
    StrBytes::from_string(addrs.advertised_host().to_string())
}

/// A broker that does not support the requested ApiVersions version answers in v0 with
/// UNSUPPORTED_VERSION; so try the request's version, then v0.
fn rewrite_api_versions(
    header: &ResponseHeader,
    body: Bytes,
    version: i16,
) -> Result<Bytes, RewriteError> {
    let err = |reason: String| RewriteError {
        api: ApiKey::ApiVersions,
        version,
        reason,
    };
    let (mut r, decoded_at) = match ApiVersionsResponse::decode(&mut body.clone(), version) {
        Ok(r) => (r, version),
        Err(first) => match ApiVersionsResponse::decode(&mut body.clone(), 0) {
            Ok(r) => (r, 0),
            Err(_) => return Err(err(first.to_string())),
        },
    };
    r.api_keys.retain_mut(
        |k| match advertised_range(k.api_key, k.min_version, k.max_version) {
            Some((lo, hi)) => {
                k.min_version = lo;
                k.max_version = hi;
                true
            }
            None => false,
        },
    );
    join_response(header, ApiKey::ApiVersions, decoded_at, &r).map_err(|e| err(e.to_string()))
}

/// Test support for the modules that build responses.
#[cfg(test)]
pub(crate) mod testing {
    use super::BrokerAddresses;
    use crate::protocol::header::join_response;
    use bytes::Bytes;
    use kafka_protocol::messages::{ApiKey, ResponseHeader};
    use kafka_protocol::protocol::Encodable;

    /// Addresses for a response that names no broker.
    pub struct NoAddresses;

    impl BrokerAddresses for NoAddresses {
        fn advertised_host(&self) -> &str {
            "gateway"
        }
        fn gateway_port(&self, _: i32, _: &str, _: i32) -> Option<i32> {
            None
        }
    }

    /// A response frame (without its size prefix) with this correlation id.
    pub fn response_frame<M: Encodable>(
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &M,
    ) -> Bytes {
        let mut h = ResponseHeader::default();
        h.correlation_id = correlation_id;
        join_response(&h, api, version, body).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::Encodable;
    use std::sync::Mutex;

    struct Fixed(Mutex<Vec<(i32, String, i32)>>);
    impl BrokerAddresses for Fixed {
        fn advertised_host(&self) -> &str {
            "gw.local"
        }
        fn gateway_port(&self, node_id: i32, host: &str, port: i32) -> Option<i32> {
            self.0
                .lock()
                .unwrap()
                .push((node_id, host.to_string(), port));
            // Node 13 stands for a broker whose port could not be bound.
            (node_id != 13).then_some(20_000 + node_id)
        }
    }

    fn frame<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
        testing::response_frame(api, version, 42, body)
    }

    #[test]
    fn metadata_brokers_are_rewritten_at_every_version() {
        for version in 0..=ApiKey::Metadata.valid_versions().max {
            let mut r = MetadataResponse::default();
            for id in 0..3 {
                let mut b = MetadataResponseBroker::default();
                b.node_id = BrokerId(id);
                b.host = StrBytes::from_string(format!("upstream-{id}"));
                b.port = 19092;
                r.brokers.push(b);
            }
            let seen = Fixed(Mutex::new(vec![]));
            let out = rewrite_response(
                &ResponseAction::Rewrite(ApiKey::Metadata, version),
                frame(ApiKey::Metadata, version, &r),
                &seen,
            )
            .unwrap();
            let (h, mut body) = split_response(&out, ApiKey::Metadata, version).unwrap();
            assert_eq!(h.correlation_id, 42);
            let back = MetadataResponse::decode(&mut body, version).unwrap();
            let addrs: Vec<_> = back
                .brokers
                .iter()
                .map(|b| (b.host.to_string(), b.port))
                .collect();
            assert_eq!(
                addrs,
                vec![
                    ("gw.local".into(), 20_000),
                    ("gw.local".into(), 20_001),
                    ("gw.local".into(), 20_002)
                ],
                "v{version}"
            );
            assert_eq!(seen.0.lock().unwrap()[2], (2, "upstream-2".into(), 19092));
        }
    }

    #[test]
    fn a_broker_without_a_served_port_is_never_advertised() {
        let version = 12;
        let mut md = MetadataResponse::default();
        for id in [12, 13] {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = StrBytes::from_static_str("upstream");
            b.port = 19092;
            md.brokers.push(b);
        }
        let out = rewrite_response(
            &ResponseAction::Rewrite(ApiKey::Metadata, version),
            frame(ApiKey::Metadata, version, &md),
            &Fixed(Mutex::new(vec![])),
        )
        .unwrap();
        let (_, mut body) = split_response(&out, ApiKey::Metadata, version).unwrap();
        let back = MetadataResponse::decode(&mut body, version).unwrap();
        let ids: Vec<i32> = back.brokers.iter().map(|b| b.node_id.0).collect();
        assert_eq!(ids, vec![12], "node 13 has no served port");

        // A coordinator on such a broker is answered as not available (retriable).
        for version in [3, 6] {
            let mut fc = FindCoordinatorResponse::default();
            if version < 4 {
                fc.node_id = BrokerId(13);
                fc.host = StrBytes::from_static_str("upstream");
                fc.port = 19092;
            } else {
                let mut c =
                    kafka_protocol::messages::find_coordinator_response::Coordinator::default();
                c.node_id = BrokerId(13);
                c.host = StrBytes::from_static_str("upstream");
                c.port = 19092;
                fc.coordinators.push(c);
            }
            let out = rewrite_response(
                &ResponseAction::Rewrite(ApiKey::FindCoordinator, version),
                frame(ApiKey::FindCoordinator, version, &fc),
                &Fixed(Mutex::new(vec![])),
            )
            .unwrap();
            let (_, mut body) = split_response(&out, ApiKey::FindCoordinator, version).unwrap();
            let back = FindCoordinatorResponse::decode(&mut body, version).unwrap();
            let (code, host, port) = match back.coordinators.first() {
                Some(c) => (c.error_code, c.host.to_string(), c.port),
                None => (back.error_code, back.host.to_string(), back.port),
            };
            assert_eq!((code, host.as_str(), port), (15, "", -1), "v{version}");
        }
    }

    #[test]
    fn api_versions_are_narrowed_and_unknown_apis_dropped() {
        let mut r = ApiVersionsResponse::default();
        for (key, lo, hi) in [(0i16, 0i16, 13i16), (1, 4, 18), (52, 0, 1), (8, 0, 9)] {
            let mut v = ApiVersion::default();
            v.api_key = key;
            v.min_version = lo;
            v.max_version = hi;
            r.api_keys.push(v);
        }
        let out = rewrite_response(
            &ResponseAction::Rewrite(ApiKey::ApiVersions, 3),
            frame(ApiKey::ApiVersions, 3, &r),
            &Fixed(Mutex::new(vec![])),
        )
        .unwrap();
        let (_, mut body) = split_response(&out, ApiKey::ApiVersions, 3).unwrap();
        let back = ApiVersionsResponse::decode(&mut body, 3).unwrap();
        let keys: Vec<_> = back
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        assert_eq!(keys, vec![(0, 3, 12), (1, 4, 15), (8, 2, 9)]);
    }

    #[test]
    fn produce_without_node_endpoints_is_forwarded_byte_for_byte() {
        let r = ProduceResponse::default();
        let f = frame(ApiKey::Produce, 11, &r);
        let out = rewrite_response(
            &ResponseAction::Rewrite(ApiKey::Produce, 11),
            f.clone(),
            &Fixed(Mutex::new(vec![])),
        )
        .unwrap();
        assert_eq!(out, f);
    }

    #[test]
    fn garbage_that_must_be_rewritten_is_an_error_not_a_leak() {
        let out = rewrite_response(
            &ResponseAction::Rewrite(ApiKey::Metadata, 9),
            Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff, 0xff]),
            &Fixed(Mutex::new(vec![])),
        );
        assert!(out.is_err());
    }
}
