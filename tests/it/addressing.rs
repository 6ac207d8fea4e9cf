//! Broker addressing: one gateway port per broker, no upstream address ever reaches a client.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::support::client::RawClient;
use crate::support::fake_broker::Cluster;
use crate::support::gateway;

fn metadata_request() -> MetadataRequest {
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![]);
    r
}

#[tokio::test]
async fn three_brokers_map_to_three_gateway_ports() {
    let (_cluster, brokers) = Cluster::start(3).await;
    let gw = gateway(brokers[0].addr, "").await;
    let base = gw.gateway.config.broker_port_base;
    let mut c = RawClient::connect(gw.bootstrap).await;
    for version in [4, 9, 12] {
        let md = c.call(version as i32, version, &metadata_request()).await;
        let mut seen: Vec<(i32, String, i32)> = md
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.host.to_string(), b.port))
            .collect();
        seen.sort();
        let expected: Vec<_> = (0..3)
            .map(|id| (id, "127.0.0.1".to_string(), (base as i32) + id))
            .collect();
        assert_eq!(seen, expected, "Metadata v{version}");
        for b in &brokers {
            assert!(md.brokers.iter().all(|x| x.port != b.addr.port() as i32));
        }
    }
    // Each port really reaches its own broker: a produce to port(2) lands on broker 2.
    let mut to_2 = RawClient::connect(("127.0.0.1", base + 2)).await;
    let mut p = ProduceRequest::default();
    p.acks = -1;
    let mut t = produce_request::TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    let mut part = produce_request::PartitionProduceData::default();
    part.index = 0;
    part.records = Some(bytes::Bytes::from_static(b"not-checked-by-the-fake"));
    t.partition_data.push(part);
    p.topic_data.push(t);
    to_2.call(7, 9, &p).await;
    assert_eq!(brokers[2].produced.lock().unwrap().len(), 1);
    assert!(brokers[0].produced.lock().unwrap().is_empty());
    assert!(brokers[1].produced.lock().unwrap().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_broker_that_joins_later_gets_a_port_without_restart() {
    let (cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "").await;
    let base = gw.gateway.config.broker_port_base as i32;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let md = c.call(1, 12, &metadata_request()).await;
    assert_eq!(md.brokers.len(), 1);

    let late = cluster.add_broker(5).await;
    let md = c.call(2, 12, &metadata_request()).await;
    let b5 = md
        .brokers
        .iter()
        .find(|b| b.node_id.0 == 5)
        .expect("broker 5 listed");
    assert_eq!((b5.host.as_str(), b5.port), ("127.0.0.1", base + 5));
    assert_ne!(b5.port, late.addr.port() as i32);

    let mut direct = RawClient::connect(("127.0.0.1", (base + 5) as u16)).await;
    let md = direct.call(1, 12, &metadata_request()).await;
    assert_eq!(md.brokers.len(), 2, "the new port proxies to a live broker");
    gw.shutdown().await;
}

#[tokio::test]
async fn coordinator_and_cluster_descriptions_name_only_gateway_addresses() {
    let (_cluster, brokers) = Cluster::start(2).await;
    let gw = gateway(brokers[0].addr, "").await;
    let base = gw.gateway.config.broker_port_base as i32;
    let mut c = RawClient::connect(gw.bootstrap).await;

    let mut fc = FindCoordinatorRequest::default();
    fc.key = StrBytes::from_static_str("group");
    let old = c.call(1, 3, &fc).await;
    assert_eq!((old.host.as_str(), old.port), ("127.0.0.1", base));
    let mut fc4 = FindCoordinatorRequest::default();
    fc4.coordinator_keys = vec![StrBytes::from_static_str("group")];
    let new = c.call(2, 4, &fc4).await;
    assert_eq!(new.coordinators.len(), 1);
    assert_eq!(
        (new.coordinators[0].host.as_str(), new.coordinators[0].port),
        ("127.0.0.1", base)
    );

    let dc = c.call(3, 1, &DescribeClusterRequest::default()).await;
    let mut ports: Vec<i32> = dc.brokers.iter().map(|b| b.port).collect();
    ports.sort();
    assert_eq!(ports, vec![base, base + 1]);
    assert!(dc.brokers.iter().all(|b| b.host.as_str() == "127.0.0.1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn api_versions_only_offer_what_the_gateway_handles() {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "").await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let r = c.call(1, 3, &ApiVersionsRequest::default()).await;
    let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 11));
    // A too-new ApiVersions request gets the broker's v0 error, still narrowed.
    c.send(2, 4, &ApiVersionsRequest::default()).await;
    let (corr, v0) = c.recv::<ApiVersionsRequest>(0).await;
    assert_eq!((corr, v0.error_code), (2, 35));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_broker_port_that_cannot_be_bound_is_not_advertised_until_it_can() {
    let (_cluster, brokers) = Cluster::start(2).await;
    // The port plan: broker 1 at base + 1, which something else holds when the gateway starts.
    let base = crate::support::port_block(4);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let gw = gateway(brokers[0].addr, &format!("broker_port_base: {base}\n")).await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let md = c.call(1, 12, &metadata_request()).await;
    let ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(
        ids,
        vec![0],
        "broker 1's port is not served, so it is not advertised"
    );
    assert!(gw
        .gateway
        .metrics
        .render()
        .contains("meshgate_broker_port_failures_total"));

    drop(squatter);
    let md = c.call(2, 12, &metadata_request()).await;
    let mut ports: Vec<(i32, i32)> = md.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
    ports.sort();
    assert_eq!(ports, vec![(0, base as i32), (1, base as i32 + 1)]);
    let mut direct = RawClient::connect(("127.0.0.1", base + 1)).await;
    assert_eq!(
        direct.call(1, 12, &metadata_request()).await.brokers.len(),
        2
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_node_id_on_the_listen_port_is_never_advertised() {
    let (_cluster, brokers) = Cluster::start(2).await;
    // broker_port_base one below the listen port: node 1 would land on the bootstrap port.
    let listen = crate::support::port_block(4) + 1;
    let gw = crate::support::gateway_listening(
        brokers[0].addr,
        listen,
        &format!("broker_port_base: {}\n", listen - 1),
    )
    .await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let md = c.call(1, 12, &metadata_request()).await;
    let ports: Vec<(i32, i32)> = md.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
    assert_eq!(ports, vec![(0, listen as i32 - 1)]);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_api_versions_request_newer_than_meshgate_decodes_gets_the_downgrade_answer() {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "").await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let max = ApiKey::ApiVersions.valid_versions().max;
    // The header of a request one version past what meshgate decodes (the Java 4.x client's v5),
    // with a flexible body it does not need to read.
    let mut frame = Vec::new();
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&(max + 1).to_be_bytes());
    frame.extend_from_slice(&9i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    c.send_raw(&frame).await;
    let (corr, v0) = c.recv::<ApiVersionsRequest>(0).await;
    assert_eq!((corr, v0.error_code), (9, 35));
    let k = &v0.api_keys[0];
    assert_eq!((k.api_key, k.max_version), (18, max));
    // The client retries on the same connection at a version both know (the fake broker, like
    // an older Kafka, stops at v3), and is answered as usual.
    let r = c.call(10, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
    assert!(r.api_keys.iter().any(|k| k.api_key == 0));
    gw.shutdown().await;
}
