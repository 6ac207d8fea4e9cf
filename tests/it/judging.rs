//! How judging behaves under hostile or unusual requests: a decompression bomb neither stalls
//! other connections nor inflates past the request budget; a repeated partition is answered as
//! a broker answers it; a rejected acks=0 produce still delivers the responses already owed.

use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use crate::enforcement::{batch, produce, produces};
use crate::support::client::RawClient;
use crate::support::fake_broker::{Cluster, FakeBroker};
use crate::support::{gateway_with_policies, policy_dir};

const CONTRACT: &str = r#"
contract:
  name: orders
  owner: team
  topic: shop.orders.v1
  schema:
    format: json
    definition: {"type": "record", "name": "O", "fields": [{"name": "order_total", "type": "double"}]}
  quality:
    validity_rules:
      - order_total > 0
"#;

async fn setup(extra: &str) -> (FakeBroker, meshgate::app::Running) {
    let (_cluster, mut brokers) = Cluster::start(1).await;
    let dir = policy_dir();
    std::fs::write(dir.join("p.yaml"), CONTRACT).unwrap();
    let broker = brokers.remove(0);
    let gw = gateway_with_policies(broker.addr, extra, &dir).await;
    (broker, gw)
}

fn partition_codes(r: &ProduceResponse) -> Vec<(String, i32, i16)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(move |p| (t.name.to_string(), p.index, p.error_code))
        })
        .collect()
}

// A current-thread runtime: judging the bomb inline would block the only worker, so another
// connection could not be answered until the bomb was.
#[tokio::test(flavor = "current_thread")]
async fn a_decompression_bomb_neither_stalls_other_connections_nor_inflates_past_the_budget() {
    let (broker, gw) = setup("").await;
    // 16 MiB of one byte compresses to a few KiB; 100 partitions of it would inflate to 1.6 GB.
    let zeros = "0".repeat(16 << 20);
    let bomb_batch = batch(&[&zeros], Compression::Zstd);
    assert!(bomb_batch.len() < 64 * 1024);
    let parts: Vec<(&str, i32, &bytes::Bytes)> = (0..100)
        .map(|i| ("shop.orders.v1", i, &bomb_batch))
        .collect();
    let mut bomber = RawClient::connect(gw.bootstrap).await;
    let mut other = RawClient::connect(gw.bootstrap).await;
    bomber.send(1, 9, &produce(1, &parts)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    other.send(2, 3, &ApiVersionsRequest::default()).await;

    let first = tokio::select! {
        r = other.recv::<ApiVersionsRequest>(3) => { assert_eq!(r.1.error_code, 0); "other" }
        _ = bomber.recv_frame() => "bomb",
    };
    assert_eq!(
        first, "other",
        "ApiVersions waited for the bomb to be judged"
    );

    let (corr, response) =
        tokio::time::timeout(Duration::from_secs(120), bomber.recv::<ProduceRequest>(9))
            .await
            .expect("the bomb is answered");
    assert_eq!(corr, 1);
    let codes = partition_codes(&response);
    assert_eq!(codes.len(), 100, "every partition answered once");
    assert!(codes.iter().all(|(_, _, c)| *c == 87), "{codes:?}");
    let over_budget = response.responses[0]
        .partition_responses
        .iter()
        .filter(|p| {
            p.error_message
                .as_ref()
                .is_some_and(|m| m.contains("per-request budget"))
        })
        .count();
    // 128 MiB at a little over 16 MiB a batch (the record framing): the first seven are
    // judged (and break the contract), the rest are refused unread.
    assert_eq!(over_budget, 93, "partitions refused by the request budget");
    assert!(produces(&broker).is_empty(), "nothing reached the broker");
    assert!(gw
        .gateway
        .metrics
        .render()
        .contains("rule=\"request_budget\""));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_repeated_partition_is_judged_and_answered_by_its_last_copy_as_a_broker_does() {
    let (broker, gw) = setup("").await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let good = batch(&[r#"{"order_total": 1}"#], Compression::None);
    let bad = batch(&[r#"{"order_total": 0}"#], Compression::None);
    let t = "shop.orders.v1";

    // The last copy of partition 0 is bad: it is refused, partition 1 is forwarded alone.
    let r = c
        .call(
            1,
            9,
            &produce(1, &[(t, 0, &good), (t, 0, &bad), (t, 1, &good)]),
        )
        .await;
    assert_eq!(
        partition_codes(&r),
        vec![(t.into(), 0, 87), (t.into(), 1, 0)]
    );
    let seen = produces(&broker);
    assert_eq!(seen.len(), 1);
    let forwarded: Vec<i32> = seen[0][0].1.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        forwarded,
        vec![1],
        "no copy of the refused partition is forwarded"
    );

    // The last copy is good: nothing is refused, the request goes as it is.
    let r = c
        .call(2, 9, &produce(1, &[(t, 0, &bad), (t, 0, &good)]))
        .await;
    assert!(partition_codes(&r).iter().all(|(_, _, code)| *code == 0));
    assert_eq!(produces(&broker).len(), 2);

    // Every last copy is refused: an empty Produce is never forwarded.
    let r = c
        .call(3, 9, &produce(1, &[(t, 0, &good), (t, 0, &bad)]))
        .await;
    assert_eq!(partition_codes(&r), vec![(t.into(), 0, 87)]);
    assert_eq!(
        produces(&broker).len(),
        2,
        "nothing more reached the broker"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rejected_acks0_produce_writes_the_responses_already_owed_before_closing() {
    let (_broker, gw) = setup("").await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(StrBytes::from_static_str("delay-300"));
    c.send(10, 4, &hb).await;
    let bad = batch(&[r#"{"order_total": 0}"#], Compression::None);
    c.send(11, 9, &produce(0, &[("shop.orders.v1", 0, &bad)]))
        .await;
    let (corr, resp) = tokio::time::timeout(Duration::from_secs(10), c.recv::<HeartbeatRequest>(4))
        .await
        .expect("the owed response arrives");
    assert_eq!((corr, resp.error_code), (10, 0));
    assert!(c.is_closed_by_peer().await, "then the connection closes");
    gw.shutdown().await;
}
