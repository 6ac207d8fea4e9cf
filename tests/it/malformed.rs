//! Bad input closes only its own connection; the gateway and other clients carry on.

use kafka_protocol::messages::*;

use crate::support::client::RawClient;
use crate::support::fake_broker::Cluster;
use crate::support::gateway;

fn metadata() -> MetadataRequest {
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![]);
    r
}

#[tokio::test]
async fn garbage_truncated_and_oversized_frames_close_only_their_connection() {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "max_frame_bytes: 65536\n").await;
    let mut good = RawClient::connect(gw.bootstrap).await;
    assert!(good.call(1, 12, &metadata()).await.brokers.len() == 1);

    let produce_v13 = RawClient::encode(1, 13, &ProduceRequest::default());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative size", (-1i32).to_be_bytes().to_vec()),
        ("oversized", {
            let mut v = (10_000_000i32).to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 100]);
            v
        }),
        ("shorter than a header", {
            let mut v = 3i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 3, 0]);
            v
        }),
        ("unknown api key", {
            let mut v = 8i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1]);
            v
        }),
        ("produce v13 (topic ids)", {
            let mut v = (produce_v13.len() as i32).to_be_bytes().to_vec();
            v.extend_from_slice(&produce_v13);
            v
        }),
        ("produce cut before acks", {
            let mut v = 12i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0x7f]);
            v
        }),
    ];
    for (name, bytes) in &cases {
        let mut bad = RawClient::connect(gw.bootstrap).await;
        bad.write_bytes(bytes).await.unwrap();
        assert!(
            bad.is_closed_by_peer().await,
            "{name}: connection must be closed"
        );
        // The well-behaved client is unaffected.
        assert_eq!(
            good.call(2, 12, &metadata()).await.brokers.len(),
            1,
            "after {name}"
        );
    }

    // Truncated: the client announces 100 bytes, sends 10, and closes its side.
    let stream = tokio::net::TcpStream::connect(gw.bootstrap).await.unwrap();
    let (_r, mut w) = stream.into_split();
    use tokio::io::AsyncWriteExt;
    w.write_all(&100i32.to_be_bytes()).await.unwrap();
    w.write_all(&[0; 10]).await.unwrap();
    w.shutdown().await.unwrap();

    // Random bytes in well-formed frames.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50 {
        let mut bad = RawClient::connect(gw.bootstrap).await;
        let mut payload = vec![0u8; 64];
        for b in payload.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let _ = bad.write_bytes(&(payload.len() as i32).to_be_bytes()).await;
        let _ = bad.write_bytes(&payload).await;
    }
    assert_eq!(good.call(3, 12, &metadata()).await.brokers.len(), 1);

    let metrics = gw.gateway.metrics.render();
    for label in [
        "negative_size",
        "oversized",
        "undecodable",
        "unknown_api",
        "unsupported_version",
    ] {
        assert!(
            metrics.contains(&format!(
                "meshgate_malformed_frames_total{{reason=\"{label}\"}}"
            )),
            "{label} not counted:\n{metrics}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_ignores_api_versions_cannot_reach_an_unrewritten_version() {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "").await;
    // Each of these would carry broker addresses meshgate does not rewrite. The version gate
    // reads only the header (api key, version, correlation id, client id), then a body follows.
    let header_only = |api: ApiKey, version: i16| {
        let mut f = Vec::new();
        f.extend_from_slice(&(api as i16).to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&1i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes());
        f.extend_from_slice(&[0; 32]);
        f
    };
    let frames = [
        header_only(ApiKey::Fetch, 16),
        header_only(ApiKey::Fetch, 17),
        header_only(ApiKey::DescribeQuorum, 2),
        header_only(ApiKey::ShareFetch, 1),
        header_only(ApiKey::ShareAcknowledge, 1),
        header_only(ApiKey::Vote, 1),
        // No allow_auto_topic_creation flag before v4: the broker could auto-create past the
        // topic rules.
        header_only(ApiKey::Metadata, 3),
    ];
    for frame in frames {
        let mut c = RawClient::connect(gw.bootstrap).await;
        c.send_raw(&frame).await;
        assert!(c.is_closed_by_peer().await, "closed, not forwarded");
    }
    let mut good = RawClient::connect(gw.bootstrap).await;
    assert_eq!(good.call(5, 12, &metadata()).await.brokers.len(), 1);
    gw.shutdown().await;
}
