//! An in-process fake Kafka cluster, for what one real broker cannot show: several brokers,
//! brokers that join later, responses out of step, and injected faults.
//!
//! It answers ApiVersions, Metadata, FindCoordinator, DescribeCluster, Produce, InitProducerId
//! and Heartbeat. A Heartbeat whose group id is `delay-<ms>` is answered after that many
//! milliseconds, and a Produce to a topic named `slow-...` after 300 ms; responses are written as
//! they become ready, so later requests can overtake earlier ones. Metadata names every topic
//! asked for, with one partition led by the first broker.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use meshgate::protocol::frame::{write_frame, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Default)]
pub struct Cluster {
    pub brokers: Mutex<Vec<(i32, SocketAddr)>>,
}

pub struct FakeBroker {
    pub addr: SocketAddr,
    /// Produce requests seen: (topic, partition, records length).
    pub produced: Arc<Mutex<Vec<(String, i32, usize)>>>,
    /// Every request seen, decoded where the fake understands it.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// The partitions of one Produce request: topic → (partition, records bytes).
pub type ProducedTopics = Vec<(String, Vec<(i32, Bytes)>)>;

/// A request the fake broker received.
#[derive(Debug, Clone)]
pub enum Seen {
    Produce {
        topics: Vec<(String, Vec<(i32, Bytes)>)>,
    },
    CreateTopics {
        validate_only: bool,
        names: Vec<String>,
    },
    /// The authentication bytes of a SaslAuthenticate request, as received.
    SaslAuthenticate(Bytes),
}

/// The one PLAIN identity the fake broker accepts.
pub const PLAIN_ALICE: &[u8] = b"\0alice\0alice-pw";

impl Cluster {
    pub async fn start(n: i32) -> (Arc<Cluster>, Vec<FakeBroker>) {
        let cluster = Arc::new(Cluster::default());
        let mut brokers = Vec::new();
        for id in 0..n {
            brokers.push(cluster.add_broker(id).await);
        }
        (cluster, brokers)
    }

    pub async fn add_broker(self: &Arc<Self>, node_id: i32) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.brokers.lock().unwrap().push((node_id, addr));
        let produced = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cluster = self.clone();
        let log = produced.clone();
        let seen_log = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let cluster = cluster.clone();
                let log = log.clone();
                let seen = seen_log.clone();
                tokio::spawn(async move { serve_connection(sock, cluster, log, seen).await });
            }
        });
        FakeBroker {
            addr,
            produced,
            seen,
        }
    }
}

async fn serve_connection(
    sock: tokio::net::TcpStream,
    cluster: Arc<Cluster>,
    log: Arc<Mutex<Vec<(String, i32, usize)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let (r, mut w) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut w, &frame).await.is_err() || w.flush().await.is_err() {
                return;
            }
        }
    });
    let mut reader = FrameReader::new(r, 64 * 1024 * 1024);
    while let Ok(Some(mut frame)) = reader.read_frame().await {
        let api = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let header =
            RequestHeader::decode(&mut frame, api.request_header_version(version)).unwrap();
        let corr = header.correlation_id;
        let (delay, response) = match api {
            ApiKey::ApiVersions => (0, api_versions(corr, version)),
            ApiKey::Metadata => (0, metadata(corr, version, &cluster, &mut frame)),
            ApiKey::InitProducerId => {
                let mut r = InitProducerIdResponse::default();
                r.producer_id = ProducerId(1000);
                (0, Some(encode(corr, api, version, &r)))
            }
            ApiKey::FindCoordinator => (0, find_coordinator(corr, version, &cluster)),
            ApiKey::DescribeCluster => (0, describe_cluster(corr, version, &cluster)),
            ApiKey::Fetch => {
                // One partition whose record set is `max_bytes` bytes of a known pattern
                // (byte i is i % 251), after `max_wait_ms`: large answers on demand.
                let req = FetchRequest::decode(&mut frame, version).unwrap();
                let mut r = FetchResponse::default();
                let mut t =
                    kafka_protocol::messages::fetch_response::FetchableTopicResponse::default();
                t.topic = req
                    .topics
                    .first()
                    .map(|t| t.topic.clone())
                    .unwrap_or_default();
                t.topic_id = req.topics.first().map(|t| t.topic_id).unwrap_or_default();
                let mut p = kafka_protocol::messages::fetch_response::PartitionData::default();
                p.records = Some(Bytes::from(fetch_pattern(req.max_bytes.max(0) as usize)));
                t.partitions.push(p);
                r.responses.push(t);
                (
                    req.max_wait_ms.max(0) as u64,
                    Some(encode(corr, api, version, &r)),
                )
            }
            ApiKey::Heartbeat => {
                let req = HeartbeatRequest::decode(&mut frame, version).unwrap();
                let delay = req
                    .group_id
                    .as_str()
                    .strip_prefix("delay-")
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                (
                    delay,
                    Some(encode(corr, api, version, &HeartbeatResponse::default())),
                )
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut frame, version).unwrap();
                seen.lock().unwrap().push(Seen::Produce {
                    topics: req
                        .topic_data
                        .iter()
                        .map(|t| {
                            let parts = t
                                .partition_data
                                .iter()
                                .map(|p| (p.index, p.records.clone().unwrap_or_default()))
                                .collect();
                            (t.name.to_string(), parts)
                        })
                        .collect(),
                });
                let mut resp = ProduceResponse::default();
                for t in &req.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    tr.name = t.name.clone();
                    for p in &t.partition_data {
                        log.lock().unwrap().push((
                            t.name.to_string(),
                            p.index,
                            p.records.as_ref().map_or(0, |r| r.len()),
                        ));
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = p.index;
                        tr.partition_responses.push(pr);
                    }
                    resp.responses.push(tr);
                }
                let reply = (req.acks != 0).then(|| encode(corr, api, version, &resp));
                let slow = req
                    .topic_data
                    .iter()
                    .any(|t| t.name.as_str().starts_with("slow-"));
                (if slow { 300 } else { 0 }, reply)
            }
            ApiKey::SaslHandshake => {
                let req = SaslHandshakeRequest::decode(&mut frame, version).unwrap();
                let mut resp = SaslHandshakeResponse::default();
                resp.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
                if req.mechanism.as_str() != "PLAIN" {
                    resp.error_code = 33; // UNSUPPORTED_SASL_MECHANISM
                }
                (0, Some(encode(corr, api, version, &resp)))
            }
            ApiKey::SaslAuthenticate => {
                let req = SaslAuthenticateRequest::decode(&mut frame, version).unwrap();
                seen.lock()
                    .unwrap()
                    .push(Seen::SaslAuthenticate(req.auth_bytes.clone()));
                let mut resp = SaslAuthenticateResponse::default();
                if req.auth_bytes.as_ref() != PLAIN_ALICE {
                    resp.error_code = 58; // SASL_AUTHENTICATION_FAILED
                    resp.error_message = Some(StrBytes::from_static_str(
                        "Authentication failed: Invalid username or password",
                    ));
                }
                (0, Some(encode(corr, api, version, &resp)))
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut frame, version).unwrap();
                seen.lock().unwrap().push(Seen::CreateTopics {
                    validate_only: req.validate_only,
                    names: req.topics.iter().map(|t| t.name.to_string()).collect(),
                });
                let mut resp = CreateTopicsResponse::default();
                for t in &req.topics {
                    let mut r = create_topics_response::CreatableTopicResult::default();
                    r.name = t.name.clone();
                    resp.topics.push(r);
                }
                (0, Some(encode(corr, api, version, &resp)))
            }
            _ => (0, None),
        };
        if let Some(response) = response {
            let tx = tx.clone();
            tokio::spawn(async move {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let _ = tx.send(response);
            });
        }
    }
}

fn encode<M: Encodable>(corr: i32, api: ApiKey, version: i16, body: &M) -> Bytes {
    let mut h = ResponseHeader::default();
    h.correlation_id = corr;
    let mut buf = BytesMut::new();
    h.encode(&mut buf, api.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

/// The record bytes the fake broker's Fetch answers carry: byte i is i % 251.
pub fn fetch_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn api_versions(corr: i32, version: i16) -> Option<Bytes> {
    let mut r = ApiVersionsResponse::default();
    for (key, lo, hi) in [
        (ApiKey::Produce, 3, 11),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::FindCoordinator, 0, 4),
        (ApiKey::DescribeCluster, 0, 1),
        (ApiKey::Heartbeat, 0, 4),
        (ApiKey::Fetch, 4, 12),
        (ApiKey::CreateTopics, 2, 7),
        (ApiKey::SaslHandshake, 0, 1),
        (ApiKey::SaslAuthenticate, 0, 2),
        (ApiKey::InitProducerId, 0, 4),
    ] {
        let mut v = ApiVersion::default();
        v.api_key = key as i16;
        v.min_version = lo;
        v.max_version = hi;
        r.api_keys.push(v);
    }
    if version > 3 {
        r.error_code = 35;
        return Some(encode(corr, ApiKey::ApiVersions, 0, &r));
    }
    Some(encode(corr, ApiKey::ApiVersions, version, &r))
}

fn metadata(corr: i32, version: i16, cluster: &Cluster, frame: &mut Bytes) -> Option<Bytes> {
    let req = MetadataRequest::decode(frame, version).unwrap();
    let mut r = MetadataResponse::default();
    let leader = cluster.brokers.lock().unwrap().first().map_or(0, |b| b.0);
    for t in req.topics.unwrap_or_default() {
        let mut mt = metadata_response::MetadataResponseTopic::default();
        mt.name = t.name;
        let mut p = metadata_response::MetadataResponsePartition::default();
        p.leader_id = BrokerId(leader);
        mt.partitions.push(p);
        r.topics.push(mt);
    }
    for (id, addr) in cluster.brokers.lock().unwrap().iter() {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(*id);
        b.host = StrBytes::from_string(addr.ip().to_string());
        b.port = addr.port() as i32;
        r.brokers.push(b);
    }
    r.controller_id = BrokerId(0);
    Some(encode(corr, ApiKey::Metadata, version, &r))
}

fn find_coordinator(corr: i32, version: i16, cluster: &Cluster) -> Option<Bytes> {
    let (id, addr) = cluster.brokers.lock().unwrap()[0];
    let mut r = FindCoordinatorResponse::default();
    if version < 4 {
        r.node_id = BrokerId(id);
        r.host = StrBytes::from_string(addr.ip().to_string());
        r.port = addr.port() as i32;
    } else {
        let mut c = Coordinator::default();
        c.key = StrBytes::from_static_str("group");
        c.node_id = BrokerId(id);
        c.host = StrBytes::from_string(addr.ip().to_string());
        c.port = addr.port() as i32;
        r.coordinators.push(c);
    }
    Some(encode(corr, ApiKey::FindCoordinator, version, &r))
}

fn describe_cluster(corr: i32, version: i16, cluster: &Cluster) -> Option<Bytes> {
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = StrBytes::from_static_str("fake");
    for (id, addr) in cluster.brokers.lock().unwrap().iter() {
        let mut b = DescribeClusterBroker::default();
        b.broker_id = BrokerId(*id);
        b.host = StrBytes::from_string(addr.ip().to_string());
        b.port = addr.port() as i32;
        r.brokers.push(b);
    }
    Some(encode(corr, ApiKey::DescribeCluster, version, &r))
}
