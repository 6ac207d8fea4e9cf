//! The external schema registry on the data path: one policy generation per request even when a
//! reload lands during a slow fetch, no fetch for a principal that is refused anyway, a cap on
//! the ids one request may make meshgate fetch, merged concurrent fetches, and 404s that expire.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use meshgate::schema::registry_client::{Fetched, RegistryClient};

use crate::enforcement::{batch_of, produce, produces};
use crate::support::client::RawClient;
use crate::support::fake_broker::Cluster;
use crate::support::fake_registry::Registry;
use crate::support::{gateway_with_policies, policy_dir};

const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[{"name":"n","type":"long"}]}"#;

fn avro_contract(name: &str, topic: &str, extra: &str) -> String {
    format!(
        "contract:\n  name: {name}\n  owner: team\n  topic: {topic}\n{extra}  schema:\n    format: avro\n    definition: {SCHEMA}\n  quality:\n    validity_rules:\n      - n > 0\n"
    )
}

/// A batch of Confluent-framed Avro values `{n: 1}` naming these schema ids.
fn framed(ids: &[u32]) -> bytes::Bytes {
    let values: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let mut v = vec![0u8];
            v.extend_from_slice(&id.to_be_bytes());
            v.push(0x02); // long 1, zigzag
            v
        })
        .collect();
    let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    batch_of(&values, Compression::None)
}

fn codes(r: &ProduceResponse) -> Vec<(String, i16)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(move |p| (t.name.to_string(), p.error_code))
        })
        .collect()
}

#[tokio::test]
async fn a_reload_during_a_slow_registry_fetch_cannot_split_a_request_across_generations() {
    let (registry, registry_addr) = Registry::start().await;
    registry.schemas.lock().unwrap().insert(1, SCHEMA.into());
    registry.schemas.lock().unwrap().insert(2, SCHEMA.into());
    *registry.delay.lock().unwrap() = Duration::from_millis(800);
    let (_cluster, brokers) = Cluster::start(1).await;
    let dir = policy_dir();
    // Generation 1: only `shop.y.v1` has an (Avro) contract.
    std::fs::write(dir.join("y.yaml"), avro_contract("y", "shop.y.v1", "")).unwrap();
    let gw = gateway_with_policies(
        brokers[0].addr,
        &format!("schema_registry: 'http://{registry_addr}'\n"),
        &dir,
    )
    .await;
    let mut c = RawClient::connect(gw.bootstrap).await;
    let req = produce(
        1,
        &[
            ("shop.y.v1", 0, &framed(&[1])),
            ("shop.x.v1", 0, &framed(&[2])),
        ],
    );
    c.send(1, 9, &req).await;

    // While id 1 is being fetched, generation 2 gives `shop.x.v1` an Avro contract too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.join("x.yaml"), avro_contract("x", "shop.x.v1", "")).unwrap();
    let before = gw.gateway.policies.generation();
    gw.gateway.policies.reload().expect("generation 2 loads");
    assert!(gw.gateway.policies.generation() > before);

    let (_, response) = c.recv::<ProduceRequest>(9).await;
    // Judged wholly under generation 1: `shop.x.v1` had no contract, so its record passes.
    // Split across generations, it would fail with "schema id 2 is unknown" (never fetched).
    assert_eq!(
        codes(&response),
        vec![("shop.y.v1".into(), 0), ("shop.x.v1".into(), 0)]
    );
    assert_eq!(produces(&brokers[0]).len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn nothing_is_fetched_for_a_principal_refused_anyway_and_one_request_fetches_at_most_sixteen_ids(
) {
    let (registry, registry_addr) = Registry::start().await;
    let (_cluster, brokers) = Cluster::start(1).await;
    let dir = policy_dir();
    std::fs::write(
        dir.join("p.yaml"),
        avro_contract("closed", "shop.closed.v1", "  producers: ['User:alice']\n")
            + "---\n"
            + &avro_contract("open", "shop.open.v1", ""),
    )
    .unwrap();
    let gw = gateway_with_policies(
        brokers[0].addr,
        &format!("schema_registry: 'http://{registry_addr}'\n"),
        &dir,
    )
    .await;
    let mut c = RawClient::connect(gw.bootstrap).await;

    // The anonymous principal may not produce to `shop.closed.v1`: refused before any fetch.
    let r = c
        .call(
            1,
            9,
            &produce(1, &[("shop.closed.v1", 0, &framed(&[41, 42]))]),
        )
        .await;
    assert_eq!(codes(&r), vec![("shop.closed.v1".into(), 29)]);
    assert_eq!(
        registry.asked_total(),
        0,
        "no fetch for a refused principal"
    );

    // Forty ids new to the gateway in one request: sixteen are asked about; the partition gets
    // a retriable error, never an acceptance. Each retry finds more in the cache.
    let ids: Vec<u32> = (100..140).collect();
    for id in &ids {
        registry.schemas.lock().unwrap().insert(*id, SCHEMA.into());
    }
    let req = produce(1, &[("shop.open.v1", 0, &framed(&ids))]);
    for (attempt, asked) in [(2, 16), (3, 32)] {
        let r = c.call(attempt, 9, &req).await;
        assert_eq!(codes(&r), vec![("shop.open.v1".into(), 7)]);
        assert_eq!(registry.asked_total(), asked);
    }
    assert!(produces(&brokers[0]).is_empty());
    let r = c.call(4, 9, &req).await;
    assert_eq!(codes(&r), vec![("shop.open.v1".into(), 0)]);
    assert_eq!(registry.asked_total(), 40);
    assert_eq!(produces(&brokers[0]).len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_fetches_of_one_id_are_merged_and_a_404_expires() {
    let (registry, addr) = Registry::start().await;
    *registry.delay.lock().unwrap() = Duration::from_millis(200);
    let client = Arc::new(
        RegistryClient::new(&format!("http://{addr}"), Duration::from_secs(5), 100)
            .unwrap()
            .with_negative_ttl(Duration::from_millis(300)),
    );
    // Unknown at first: ten callers at once, one request.
    let answers = futures_util::future::join_all((0..10).map(|_| client.fetch(7))).await;
    assert!(answers.iter().all(|a| matches!(a, Fetched::Unknown)));
    assert_eq!(registry.asked_total(), 1, "one request for ten callers");
    assert_eq!(client.fetches_in_flight(), 0);

    // The registry learns the schema; the 404 is believed until its TTL runs out.
    registry.schemas.lock().unwrap().insert(7, SCHEMA.into());
    assert!(matches!(client.fetch(7).await, Fetched::Unknown));
    assert_eq!(registry.asked_total(), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(client.fetch(7).await, Fetched::Found(_)));
    assert_eq!(registry.asked_total(), 2);
}

#[tokio::test]
async fn a_registry_body_over_the_size_limit_is_unavailable_not_parsed() {
    let (registry, addr) = Registry::start().await;
    let huge = format!(
        r#"{{"type":"record","name":"E","doc":"{}","fields":[]}}"#,
        "x".repeat(5 << 20)
    );
    registry.schemas.lock().unwrap().insert(9, huge);
    let client =
        RegistryClient::new(&format!("http://{addr}"), Duration::from_secs(5), 100).unwrap();
    assert!(matches!(client.fetch(9).await, Fetched::Unavailable(_)));
    assert!(client.cached(9).is_none(), "a failure is not cached");
}
