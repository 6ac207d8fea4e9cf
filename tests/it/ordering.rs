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
