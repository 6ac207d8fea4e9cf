//! Policy enforcement on the wire: what the broker receives and what the client gets back.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::support::client::RawClient;
use crate::support::fake_broker::{Cluster, ProducedTopics, Seen};
use crate::support::{gateway_with_policies, policy_dir};

const POLICY: &str = r#"
naming:
  topics:
    pattern: '^[a-z]+\.[a-z-]+\.v[0-9]+$'
topics:
  partitions: { min: 3 }
---
contract:
  name: orders
  owner: team
  topic: shop.orders.v1
  schema:
    format: json
    definition: {"type": "record", "name": "O", "fields": [
      {"name": "order_total", "type": "double"},
      {"name": "customer_id", "type": ["null", "string"], "default": null}]}
  quality:
    validity_rules:
      - order_total > 0
      - customer_id is not null
"#;

pub(crate) fn batch(values: &[&str], compression: Compression) -> Bytes {
    let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    batch_of(&values, compression)
}

/// A record batch of these values (no key, no producer id).
pub(crate) fn batch_of(values: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

pub(crate) fn produce(acks: i16, parts: &[(&str, i32, &Bytes)]) -> ProduceRequest {
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5000;
    for (topic, index, records) in parts {
        let pos = req
            .topic_data
            .iter()
            .position(|t| t.name.as_str() == *topic);
        let t = match pos {
            Some(i) => &mut req.topic_data[i],
            None => {
                let mut t = TopicProduceData::default();
                t.name = TopicName(StrBytes::from_string(topic.to_string()));
                req.topic_data.push(t);
                req.topic_data.last_mut().unwrap()
            }
        };
        let mut p = PartitionProduceData::default();
        p.index = *index;
        p.records = Some((*records).clone());
        t.partition_data.push(p);
    }
    req
}

async fn setup() -> (
    crate::support::fake_broker::FakeBroker,
    meshgate::app::Running,
    RawClient,
) {
    let (_cluster, mut brokers) = Cluster::start(1).await;
    let dir = policy_dir();
    std::fs::write(dir.join("p.yaml"), POLICY).unwrap();
    let broker = brokers.remove(0);
    let gw = gateway_with_policies(broker.addr, "", &dir).await;
    let client = RawClient::connect(gw.bootstrap).await;
    (broker, gw, client)
}

pub(crate) fn produces(b: &crate::support::fake_broker::FakeBroker) -> Vec<ProducedTopics> {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Produce { topics, .. } => Some(topics.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn rejected_partitions_do_not_block_accepted_ones_and_the_response_keeps_request_order() {
    let (broker, gw, mut c) = setup().await;
    let good = batch(
        &[r#"{"order_total": 5, "customer_id": "c"}"#],
        Compression::Lz4,
    );
    let bad = batch(
        &[
            r#"{"order_total": 5, "customer_id": "c"}"#,
            r#"{"order_total": 0, "customer_id": "c"}"#,
            r#"{"order_total": 7}"#,
        ],
        Compression::Zstd,
    );
    let other = batch(&["anything"], Compression::None);
    // Request order: orders/0 good, orders/1 bad, other topic, orders/2 good, a badly named topic.
    let req = produce(
        -1,
        &[
            ("shop.orders.v1", 0, &good),
            ("shop.orders.v1", 1, &bad),
            ("shop.free.v1", 0, &other),
            ("shop.orders.v1", 2, &good),
            ("Bad_Topic", 0, &other),
        ],
    );
    let resp = c.call(1, 9, &req).await;

    let got: Vec<(String, i32, i16)> = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(move |p| (t.name.to_string(), p.index, p.error_code))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("shop.orders.v1".into(), 0, 0),
            ("shop.orders.v1".into(), 1, 87),
            ("shop.orders.v1".into(), 2, 0),
            ("shop.free.v1".into(), 0, 0),
            ("Bad_Topic".into(), 0, 44),
        ]
    );
    let p1 = &resp.responses[0].partition_responses[1];
    let msg = p1.error_message.as_ref().unwrap().to_string();
    assert!(
        msg.contains("record 1")
            && msg.contains("rule `order_total > 0`")
            && msg.contains("p.yaml:19"),
        "{msg}"
    );
    let record_errors: Vec<(i32, String)> = p1
        .record_errors
        .iter()
        .map(|e| {
            (
                e.batch_index,
                e.batch_index_error_message.as_ref().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(record_errors.len(), 2);
    assert_eq!(record_errors[0].0, 1);
    assert!(record_errors[0].1.contains("order_total > 0"));
    assert_eq!(record_errors[1].0, 2);
    assert!(record_errors[1].1.contains("customer_id is not null"));
    let naming = resp.responses[2].partition_responses[0]
        .error_message
        .as_ref()
        .unwrap()
        .to_string();
    assert!(naming.contains("naming rule"), "{naming}");

    // The broker got only the accepted partitions, each batch byte for byte as sent.
    let seen = produces(&broker);
    assert_eq!(seen.len(), 1);
    let forwarded: Vec<(String, i32, Bytes)> = seen[0]
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |(i, b)| (t.clone(), *i, b.clone())))
        .collect();
    assert_eq!(
        forwarded,
        vec![
            ("shop.orders.v1".into(), 0, good.clone()),
            ("shop.orders.v1".into(), 2, good.clone()),
            ("shop.free.v1".into(), 0, other.clone()),
        ]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_fully_accepted_request_is_forwarded_untouched_and_a_fully_rejected_one_never_reaches_the_broker(
) {
    let (broker, gw, mut c) = setup().await;
    let good = batch(
        &[r#"{"order_total": 1.5, "customer_id": "c"}"#],
        Compression::Gzip,
    );
    let bad = batch(
        &[r#"{"order_total": -1, "customer_id": "c"}"#],
        Compression::Snappy,
    );
    for version in [3, 7, 8, 9, 12] {
        let resp = c
            .call(
                version as i32,
                version,
                &produce(-1, &[("shop.orders.v1", 0, &good)]),
            )
            .await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        let resp = c
            .call(
                100 + version as i32,
                version,
                &produce(-1, &[("shop.orders.v1", 0, &bad)]),
            )
            .await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 87, "v{version}");
        // error_message and record_errors exist from v8.
        assert_eq!(p.error_message.is_some(), version >= 8, "v{version}");
        assert_eq!(
            p.record_errors.len(),
            usize::from(version >= 8),
            "v{version}"
        );
    }
    let seen = produces(&broker);
    assert_eq!(
        seen.len(),
        5,
        "only the five good requests reached the broker"
    );
    assert!(seen.iter().all(|t| t[0].1[0].1 == good));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rejected_acks0_produce_closes_the_connection_after_forwarding_the_accepted_part() {
    let (broker, gw, mut c) = setup().await;
    let good = batch(
        &[r#"{"order_total": 1, "customer_id": "c"}"#],
        Compression::None,
    );
    let bad = batch(
        &[r#"{"order_total": 0, "customer_id": "c"}"#],
        Compression::None,
    );
    c.send(
        1,
        9,
        &produce(
            0,
            &[("shop.orders.v1", 0, &good), ("shop.orders.v1", 1, &bad)],
        ),
    )
    .await;
    assert!(c.is_closed_by_peer().await);
    let seen = produces(&broker);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0][0].1.len(), 1, "only partition 0 was forwarded");
    assert!(gw
        .gateway
        .metrics
        .render()
        .contains("reason=\"rejected_acks0\""));
    gw.shutdown().await;
}

#[tokio::test]
async fn create_topics_rejects_per_topic_forwards_the_rest_and_keeps_validate_only() {
    let (broker, gw, mut c) = setup().await;
    let topic = |name: &str, partitions: i32| {
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(name.into()));
        t.num_partitions = partitions;
        t.replication_factor = 1;
        t
    };
    let mut req = CreateTopicsRequest::default();
    req.validate_only = true;
    req.topics = vec![
        topic("Bad", 3),
        topic("shop.orders.v1", 3),
        topic("shop.small.v1", 1),
    ];
    let resp = c.call(1, 5, &req).await;
    let got: Vec<(String, i16)> = resp
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Bad".into(), 44),
            ("shop.orders.v1".into(), 0),
            ("shop.small.v1".into(), 44)
        ]
    );
    assert!(resp.topics[2]
        .error_message
        .as_ref()
        .unwrap()
        .contains("at least 3"));
    let seen: Vec<(bool, Vec<String>)> = broker
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::CreateTopics {
                validate_only,
                names,
            } => Some((*validate_only, names.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(seen, vec![(true, vec!["shop.orders.v1".to_string()])]);
    gw.shutdown().await;
}
