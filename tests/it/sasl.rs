//! SASL through the gateway: the frames reach the broker unchanged, the broker's verdict reaches
//! the client, and the principal the broker accepted is the one policies see. (tansu 0.6.0
//! offers SCRAM only; PLAIN is proven here, SCRAM against tansu in tests/e2e/test_security.py.)

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use crate::enforcement::{batch, produce, produces};
use crate::support::client::RawClient;
use crate::support::fake_broker::{Cluster, Seen, PLAIN_ALICE};
use crate::support::{gateway_with_policies, policy_dir};

const OWNED: &str =
    "contract:\n  name: owned\n  owner: team\n  topic: shop.owned.v1\n  producers: [User:alice]\n";

async fn authenticate(client: &mut RawClient, corr: i32, auth: &[u8]) -> SaslAuthenticateResponse {
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str("PLAIN");
    let r = client.call(corr, 1, &hs).await;
    assert_eq!(r.error_code, 0);
    let mut req = SaslAuthenticateRequest::default();
    req.auth_bytes = Bytes::copy_from_slice(auth);
    client.call(corr + 1, 2, &req).await
}

fn sasl_bytes_seen(b: &crate::support::fake_broker::FakeBroker) -> Vec<Bytes> {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::SaslAuthenticate(bytes) => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn plain_passes_through_and_the_accepted_principal_owns_its_topic() {
    let (_cluster, mut brokers) = Cluster::start(1).await;
    let broker = brokers.remove(0);
    let dir = policy_dir();
    std::fs::write(dir.join("owned.yaml"), OWNED).unwrap();
    let gw = gateway_with_policies(broker.addr, "", &dir).await;
    let records = batch(&[r#"{"n": 1}"#], Compression::None);

    // alice, with her password: the broker accepts, and alice may produce.
    let mut alice = RawClient::connect(gw.bootstrap).await;
    let r = authenticate(&mut alice, 1, PLAIN_ALICE).await;
    assert_eq!(r.error_code, 0);
    let resp = alice
        .call(3, 9, &produce(-1, &[("shop.owned.v1", 0, &records)]))
        .await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(
        produces(&broker).len(),
        1,
        "alice's produce reached the broker"
    );

    // alice, with a wrong password: the broker's error and message reach the client, and the
    // connection stays anonymous to policies.
    let mut mallory = RawClient::connect(gw.bootstrap).await;
    let r = authenticate(&mut mallory, 1, b"\0alice\0guess").await;
    assert_eq!(r.error_code, 58);
    assert_eq!(
        r.error_message.as_deref(),
        Some("Authentication failed: Invalid username or password")
    );
    let resp = mallory
        .call(3, 9, &produce(-1, &[("shop.owned.v1", 0, &records)]))
        .await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 29);
    assert_eq!(
        produces(&broker).len(),
        1,
        "the refused produce never reached the broker"
    );

    // Both authentication frames reached the broker byte for byte.
    assert_eq!(
        sasl_bytes_seen(&broker),
        vec![
            Bytes::from_static(PLAIN_ALICE),
            Bytes::from_static(b"\0alice\0guess")
        ]
    );
    gw.shutdown().await;
}
