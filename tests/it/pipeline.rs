//! The in-flight limit never hangs a connection: a burst of pipelined requests larger than
//! `max_in_flight` is answered in full and in order, whatever the limit, and a client that
//! disconnects mid-burst gives its connection slot back.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::*;
use meshgate::protocol::frame::write_frame;

use crate::support::client::RawClient;
use crate::support::fake_broker::Cluster;
use crate::support::gateway;

/// `n` Metadata v4 requests (correlation ids 0..n), framed back to back in one buffer.
fn metadata_burst(n: i32) -> Vec<u8> {
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![]);
    let mut out = Vec::new();
    for corr in 0..n {
        let frame = RawClient::encode(corr, 4, &md);
        out.extend_from_slice(&(frame.len() as i32).to_be_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

async fn burst_is_answered_in_order(max_in_flight: i32, n: i32) {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(
        brokers[0].addr,
        &format!("max_in_flight: {max_in_flight}\n"),
    )
    .await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    c.write_bytes(&metadata_burst(n)).await.unwrap();
    for expected in 0..n {
        let frame = tokio::time::timeout(Duration::from_secs(20), c.recv_frame())
            .await
            .unwrap_or_else(|_| {
                panic!("max_in_flight {max_in_flight}: no response {expected} of {n}: hung")
            })
            .expect("a response");
        let corr = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        assert_eq!(
            corr, expected,
            "max_in_flight {max_in_flight}: response order"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_burst_just_over_the_in_flight_limit_is_answered_in_order() {
    for limit in [1, 4, 256] {
        burst_is_answered_in_order(limit, limit + 1).await;
    }
}

#[tokio::test]
async fn a_burst_ten_times_the_in_flight_limit_is_answered_in_order() {
    for limit in [1, 4, 256] {
        burst_is_answered_in_order(limit, limit * 10).await;
    }
}

#[tokio::test]
async fn a_burst_of_mixed_frame_sizes_over_the_limit_is_answered_in_order() {
    // Small frames between large ones (a 200 KB Heartbeat group id is still a valid frame for
    // the fake broker) exercise both the held and the buffered write paths.
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "max_in_flight: 2\n").await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let mut buf = BytesMut::new();
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![]);
    let big = "x".repeat(200_000);
    for corr in 0..20 {
        let frame = if corr % 3 == 0 {
            let mut hb = HeartbeatRequest::default();
            hb.group_id = GroupId(big.clone().into());
            RawClient::encode(corr, 4, &hb)
        } else {
            RawClient::encode(corr, 4, &md)
        };
        let mut framed = Vec::new();
        write_frame(&mut framed, &frame).await.unwrap();
        buf.extend_from_slice(&framed);
    }
    c.write_bytes(&buf).await.unwrap();
    for expected in 0..20 {
        let frame = tokio::time::timeout(Duration::from_secs(20), c.recv_frame())
            .await
            .expect("hung")
            .expect("a response");
        assert_eq!(i32::from_be_bytes(frame[..4].try_into().unwrap()), expected);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_burst_frees_its_connection_slot() {
    let (_cluster, brokers) = Cluster::start(1).await;
    // One connection at a time: the next client is served only once the first is gone.
    let gw = gateway(brokers[0].addr, "max_in_flight: 1\nmax_connections: 1\n").await;
    {
        let mut c = RawClient::connect(gw.bootstrap).await;
        c.write_bytes(&metadata_burst(50)).await.unwrap();
        // Read a few responses, then vanish with the rest of the burst in flight.
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(20), c.recv_frame())
                .await
                .expect("hung before the client left")
                .expect("a response");
        }
    }
    let served = async {
        loop {
            let mut c = RawClient::connect(gw.bootstrap).await;
            let mut md = MetadataRequest::default();
            md.topics = Some(vec![]);
            c.send(7, 4, &md).await;
            if let Some(frame) = c.recv_frame().await {
                return frame;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let frame = tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("the first connection's slot was never freed");
    assert_eq!(i32::from_be_bytes(frame[..4].try_into().unwrap()), 7);
    assert_eq!(
        gw.gateway.metrics.connections_active.get(),
        1,
        "only the new connection is open"
    );
    gw.shutdown().await;
}
