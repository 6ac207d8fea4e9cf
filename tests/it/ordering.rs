//! Responses reach the client in request order, whatever order the upstream answers in.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::support::client::RawClient;
use crate::support::fake_broker::Cluster;
use crate::support::gateway;

#[tokio::test]
async fn pipelined_responses_keep_request_order_when_upstream_answers_out_of_step() {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "").await;
    let mut c = RawClient::connect(gw.bootstrap).await;

    let mut expected = Vec::new();
    for i in 0..30i32 {
        // Earlier requests are delayed longer, so the fake broker answers them last.
        let mut hb = HeartbeatRequest::default();
        hb.group_id = GroupId(StrBytes::from_string(format!("delay-{}", (30 - i) * 7)));
        c.send(i * 10, 4, &hb).await;
        expected.push(i * 10);
        if i % 5 == 0 {
            // An acks=0 produce in the middle: no response must be expected for it.
            let mut p = ProduceRequest::default();
            p.acks = 0;
            c.send(i * 10 + 1, 9, &p).await;
        }
        if i % 3 == 0 {
            let mut md = MetadataRequest::default();
            md.topics = Some(vec![]);
            c.send(i * 10 + 2, 12, &md).await;
            expected.push(i * 10 + 2);
        }
    }
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let frame = c.recv_frame().await.expect("response");
        got.push(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]));
    }
    assert_eq!(got, expected);
    gw.shutdown().await;
}

/// A refused partition whose records go to a dead-letter topic is answered only once the
/// dead-letter write is acknowledged (here 300 ms later); the requests pipelined behind it are
/// forwarded meanwhile, and every answer still reaches the client in request order.
#[tokio::test]
async fn a_dead_lettered_refusal_holds_its_place_in_the_response_order() {
    use crate::enforcement::{batch, produce};
    use kafka_protocol::records::Compression;

    let (_cluster, mut brokers) = Cluster::start(1).await;
    let dir = crate::support::policy_dir();
    std::fs::write(
        dir.join("p.yaml"),
        "contract:\n  name: orders\n  owner: team\n  topic: shop.orders.v1\n  on_reject: { dead_letter: slow-dlq }\n  quality:\n    validity_rules: [n > 0]\n",
    )
    .unwrap();
    let broker = brokers.remove(0);
    let gw = crate::support::gateway_with_policies(broker.addr, "", &dir).await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let bad = batch(&[r#"{"n": -1}"#], Compression::None);
    let good = batch(&[r#"{"n": 1}"#], Compression::None);
    // refused (dead-lettered), accepted, refused, accepted: pipelined on one connection.
    for (i, records) in [&bad, &good, &bad, &good].into_iter().enumerate() {
        c.send(i as i32, 9, &produce(-1, &[("shop.orders.v1", 0, records)]))
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        let (corr, r) = c.recv::<ProduceRequest>(9).await;
        got.push((corr, r.responses[0].partition_responses[0].error_code));
    }
    assert_eq!(got, vec![(0, 87), (1, 0), (2, 87), (3, 0)]);
    // The dead-letter topic got both refused records, in meshgate's own batches.
    let dead: usize = crate::enforcement::produces(&broker)
        .iter()
        .flatten()
        .filter(|(t, _)| t == "slow-dlq")
        .map(|(_, parts)| parts.len())
        .sum();
    assert!(dead >= 1, "dead letters written");
    let main: usize = crate::enforcement::produces(&broker)
        .iter()
        .flatten()
        .filter(|(t, _)| t == "shop.orders.v1")
        .count();
    assert_eq!(main, 2, "only the accepted requests reached the topic");
    gw.shutdown().await;
}

/// A Fetch answer larger than what meshgate holds whole (256 KiB) is streamed to the client as
/// it arrives: every byte the same, and the answers behind it (one the broker sends, one meshgate
/// makes itself) still follow in request order, at once.
#[tokio::test]
async fn a_large_answer_streams_through_and_the_answers_behind_it_keep_their_order() {
    use crate::support::fake_broker::fetch_pattern;
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "").await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let size = 3 << 20;
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = 200;
    fetch.max_bytes = size as i32;
    let mut t = kafka_protocol::messages::fetch_request::FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("big.v1"));
    t.partitions.push(Default::default());
    fetch.topics.push(t);
    c.send(1, 12, &fetch).await;
    // ApiVersions at a version meshgate answers itself (ready at once, behind the Fetch).
    c.send_raw(&[0, 18, 0, 99, 0, 0, 0, 2, 0xff, 0xff, 0]).await;
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(StrBytes::from_static_str("fast"));
    c.send(3, 4, &hb).await;
    let (corr, r) = c.recv::<FetchRequest>(12).await;
    assert_eq!(corr, 1);
    let records = r.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(records.len(), size);
    assert!(
        records == fetch_pattern(size),
        "the streamed bytes are the broker's"
    );
    let next: Vec<i32> = [c.recv_frame().await.unwrap(), c.recv_frame().await.unwrap()]
        .iter()
        .map(|f| i32::from_be_bytes([f[0], f[1], f[2], f[3]]))
        .collect();
    assert_eq!(next, [2, 3]);
    assert_eq!(
        gw.gateway.metrics.responses_streamed.get(),
        1,
        "the Fetch answer, streamed"
    );
    gw.shutdown().await;
}
