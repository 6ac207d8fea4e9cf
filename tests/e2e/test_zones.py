"""A partner zone end to end, against Apache Kafka with librdkafka: the partner `alice`
authenticates (SASL PLAIN, checked by Kafka itself) on the zone's own listener, in front of the
broker's SASL listener.

- she lists topics and sees only the zone's alias;
- she consumes through the alias with a consumer group, commits, and reads the committed offset
  back; on the cluster the group carries the zone's prefix and the real topic;
- the records she reads are byte-identical (key, value, headers, timestamp, offset) to the
  original topic's, read directly from the broker;
- she cannot produce, cannot read the unshared topic by its name, and neither lists nor
  describes nor reads the offsets of an internal group;
- `bob`, who is not the zone's partner, is not served;
- /metrics and /catalog show the zone's traffic.
"""

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from clients import create_topic
from conftest import port_block, start_gateway, wait_for_port

ZONE = """
zone:
  name: acme{run}
  listen: 127.0.0.1:{port}
  principals: [User:alice]
  shares:
    - {{topic: {topic}, as: partner-acme.orders}}
    - {{topic: {inbox}, as: partner-acme.inbox, produce: true}}
---
contract:
  name: inbox-{run}
  owner: orders-team
  topic: {inbox}
  quality:
    validity_rules: [n > 0]
"""


def sasl(user):
    from kafka_cluster import USERS
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
            "sasl.username": user, "sasl.password": dict(USERS)[user]}


def read_all(conf, topics=None, assign=None, n=0, timeout=20):
    """Messages read until `n` arrived (and 1 s more), or the timeout; the first error."""
    c = Consumer({"auto.offset.reset": "earliest", "enable.auto.commit": False, **conf})
    if assign:
        c.assign(assign)
    else:
        c.subscribe(topics)
    out, error, end, settle = [], None, time.time() + timeout, None
    try:
        while time.time() < end:
            m = c.poll(0.5)
            if m is not None:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        error = error or m.error()
                else:
                    out.append(m)
            if n and len(out) >= n and settle is None:
                settle = time.time() + 1
            if settle and time.time() >= settle:
                break
        return out, error, c
    except Exception:
        c.close()
        raise


def shape(m):
    return (m.partition(), m.offset(), m.key(), m.value(), m.headers(), m.timestamp())


@pytest.fixture
def zone(broker, logdir, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic, secret = f"zone.orders{run}.v1", f"zone.secret{run}.v1"
    port = port_block(10)
    policies = tmp_path / "policies"
    policies.mkdir()
    inbox = f"zone.inbox{run}.v1"
    (policies / "zone.yaml").write_text(ZONE.format(run=run, port=port, topic=topic, inbox=inbox))
    for t in (topic, secret, inbox):
        create_topic(broker.bootstrap, t, partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        p.produce(topic, key=f"k{i}".encode(), value=json.dumps({"n": i}).encode(),
                  headers=[("trace", f"t{i}".encode()), ("trace", b"again")], partition=i % 2)
        p.produce(secret, value=f"secret-{i}".encode())
    assert p.flush(30) == 0
    sasl_addr = f"127.0.0.1:{broker.cluster.nodes[0].ports['SASL_PLAINTEXT']}"
    gw = start_gateway(sasl_addr, logdir, policies=policies)
    wait_for_port(port)
    yield gw, run, topic, secret, f"127.0.0.1:{port}"
    assert gw.stop() == 0


def test_a_partner_reads_the_shared_topic_under_its_alias_and_nothing_else(broker, zone):
    gw, run, topic, secret, bootstrap = zone
    alice = {"bootstrap.servers": bootstrap, **sasl("alice")}

    # Metadata: the alias, and nothing else (no real names, no internal topics).
    listed = AdminClient(alice).list_topics(timeout=15).topics
    assert set(listed) == {"partner-acme.orders", "partner-acme.inbox"}, set(listed)

    # Consume through the alias with a group, and commit.
    group = f"partner-readers-{run}"
    got, error, c = read_all({**alice, "group.id": group}, topics=["partner-acme.orders"], n=20)
    try:
        assert error is None, error
        assert len(got) == 20
        assert {m.topic() for m in got} == {"partner-acme.orders"}
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition("partner-acme.orders", 0),
                                 TopicPartition("partner-acme.orders", 1)], timeout=15)
        assert sorted(tp.offset for tp in committed) == [10, 10]
    finally:
        c.close()

    # Byte-identical to the original topic, read directly.
    direct, error, d = read_all({"bootstrap.servers": broker.bootstrap, "group.id": f"d-{run}"},
                                topics=[topic], n=20)
    d.close()
    assert error is None
    assert sorted(map(shape, got)) == sorted(map(shape, direct))

    # On the cluster: the zone's prefix, and the real topic.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka import ConsumerGroupTopicPartitions
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(f"zone.acme{run}.{group}")])[f"zone.acme{run}.{group}"].result(15)
    assert {(tp.topic, tp.offset) for tp in offsets.topic_partitions} == {(topic, 10)}

    # No producing through the zone.
    outcome = []
    p = Producer({**alice, "acks": "all", "message.timeout.ms": 10000})
    p.produce("partner-acme.orders", value=b"from the partner", on_delivery=lambda e, m: outcome.append(e))
    p.flush(15)
    assert outcome and outcome[0] is not None
    assert outcome[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, outcome[0]

    # No reading the unshared topic by its real name: it does not exist for the partner.
    got, error, c = read_all({**alice, "group.id": group},
                             assign=[TopicPartition(secret, 0, 0)], timeout=6)
    try:
        assert got == []
        assert error is None or error.code() in (
            KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART), error
        with pytest.raises(KafkaException) as e:
            c.get_watermark_offsets(TopicPartition(secret, 0), timeout=5)
        assert e.value.args[0].code() in (
            KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._UNKNOWN_PARTITION), e.value
    finally:
        c.close()

    # An internal group: it exists on the cluster, and the partner cannot see it.
    internal = f"internal-billing-{run}"
    got, _, c = read_all({"bootstrap.servers": broker.bootstrap, "group.id": internal},
                         topics=[secret], n=20)
    c.commit(asynchronous=False)
    c.close()
    zone_admin = AdminClient(alice)
    groups = zone_admin.list_consumer_groups().result(15)
    names = {g.group_id for g in groups.valid}
    assert group in names and internal not in names, names
    assert not any(n.startswith("zone.") for n in names), names
    described = zone_admin.describe_consumer_groups([internal])[internal].result(15)
    assert described.members == [] and str(described.state).endswith("DEAD"), described
    offsets = zone_admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(internal)])[internal].result(15)
    assert offsets.topic_partitions == [] or all(
        tp.offset < 0 for tp in offsets.topic_partitions), offsets.topic_partitions

    # The zone's traffic on /metrics and /catalog.
    zone_name = f"acme{run}"
    text = gw.metrics()
    values = {(s.name, s.labels.get("zone")): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("meshgate_zone_fetched_records_total", zone_name)] >= 20
    assert values[("meshgate_zone_fetched_bytes_total", zone_name)] > 0
    assert values[("meshgate_zone_active_principals", zone_name)] == 1
    assert values[("meshgate_zone_active_groups", zone_name)] >= 1
    status, body = gw.admin("/catalog")
    z = next(z for z in json.loads(body)["zones"] if z["name"] == zone_name)
    assert z["shares"][0] == {"alias": "partner-acme.orders", "topic": topic, "produce": False}
    assert z["usage"]["fetched_records"] >= 20


def test_a_principal_other_than_the_partner_is_not_served(zone):
    gw, run, _, _, bootstrap = zone
    bob = AdminClient({"bootstrap.servers": bootstrap, **sasl("bob")})
    with pytest.raises(KafkaException):
        bob.list_topics(timeout=6)
    assert f'meshgate_zone_refusals_total{{reason="principal",zone="acme{run}"}}' in gw.metrics()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_the_java_client_consumes_by_alias_with_either_group_protocol(broker, zone, protocol):
    """The Java client through the zone: the classic group protocol (JoinGroup, SyncGroup,
    Heartbeat, OffsetCommit) and KIP-848's (ConsumerGroupHeartbeat, whose subscription names the
    alias and whose assignment names topic ids) both read every record by alias and commit."""
    import os
    import subprocess
    from conftest import ROOT
    from kafka_cluster import USERS, classpath, java
    gw, run, topic, _, bootstrap = zone
    env = {**os.environ, "MESHGATE_SASL_USER": "alice",
           "MESHGATE_SASL_PASSWORD": dict(USERS)["alice"]}
    group = f"java-{protocol}-{run}"
    out = subprocess.run(
        [java(), "-cp", classpath(), str(ROOT / "tests" / "clients" / "java" / "ClientCheck.java"),
         "consume", bootstrap, "partner-acme.orders", group, protocol, "20"],
        capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(json.loads(v)["n"] for v in result["values"]) == list(range(20)), result
    assert result["extra_seen"] == 0
    # Its commits are on the cluster under the zone's prefix, on the real topic.
    from confluent_kafka import ConsumerGroupTopicPartitions
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    cluster_group = f"zone.acme{run}.{group}"
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(cluster_group)])[cluster_group].result(15)
    assert {tp.topic for tp in offsets.topic_partitions} == {topic}
    assert sum(tp.offset for tp in offsets.topic_partitions) == 20



def test_a_share_with_produce_takes_the_partners_records_under_the_contract(broker, zone):
    """`produce: true` on a share: the partner writes by alias, its records land in the real
    topic, and the topic's contract judges them as any producer's."""
    gw, run, _, _, bootstrap = zone
    inbox = f"zone.inbox{run}.v1"
    outcome = {}
    for n in (1, -1, 2):
        p = Producer({"bootstrap.servers": bootstrap, **sasl("alice"), "acks": "all",
                      "enable.idempotence": True, "linger.ms": 0})
        p.produce("partner-acme.inbox", value=json.dumps({"n": n}).encode(),
                  on_delivery=lambda e, m, n=n: outcome.__setitem__(n, (e, m.topic())))
        p.flush(15)
    assert outcome[1][0] is None and outcome[2][0] is None, outcome
    assert outcome[1][1] == "partner-acme.inbox"
    assert outcome[-1][0].code() == KafkaError.INVALID_RECORD, outcome[-1]
    got, error, c = read_all({"bootstrap.servers": broker.bootstrap, "group.id": f"in-{run}"},
                             topics=[inbox], n=2)
    c.close()
    assert error is None
    assert sorted(json.loads(m.value())["n"] for m in got) == [1, 2]
