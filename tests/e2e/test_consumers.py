"""Read access end to end, against Apache Kafka with real clients: a contract's `consumers:`
lets only its principals read its topic and only its groups hold offsets of it. meshgate sits in
front of the broker's SASL listener; alice and bob authenticate with PLAIN through it.

- bob (not a consumer) gets TOPIC_AUTHORIZATION_FAILED from librdkafka (Fetch, ListOffsets) and
  TopicAuthorizationException from the Java client, and reads no record;
- alice reads every record with an admitted group, and commits;
- alice with a group the contract does not admit gets GROUP_AUTHORIZATION_FAILED;
- a topic without `consumers:` stays open to everyone;
- a group id that breaks `naming.groups` gets INVALID_GROUP_ID;
- with `access: {hide_unauthorized_topics: true}`, a topic bob may neither write nor read is
  absent from his Metadata, and present in alice's.
"""

import json
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from clients import create_topic
from conftest import ROOT, start_gateway

CONTRACT = """
contract:
  name: {name}
  owner: reads-team
  topic: {topic}
  consumers: [User:alice, Group:readers-*]
---
contract:
  name: {name}-private
  owner: reads-team
  topic: {private}
  producers: [User:alice]
  consumers: [User:alice]
---
access: {{ hide_unauthorized_topics: true }}
---
naming:
  topics: {{ pattern: '.*' }}
  groups: {{ pattern: '^(readers|other|unused)-', exempt: ['^wm$'] }}
"""


def sasl(user):
    from kafka_cluster import USERS
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
            "sasl.username": user, "sasl.password": dict(USERS)[user]}


def setup(broker, logdir, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic, open_topic = f"reads.t{run}.v1", f"reads.open{run}.v1"
    private = f"reads.private{run}.v1"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "reads.yaml").write_text(
        CONTRACT.format(name=f"reads-{run}", topic=topic, private=private))
    sasl_addr = f"127.0.0.1:{broker.cluster.nodes[0].ports['SASL_PLAINTEXT']}"
    gw = start_gateway(sasl_addr, logdir, policies=policies)
    for t in (topic, open_topic, private):
        create_topic(broker.bootstrap, t, partitions=1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for t in (topic, open_topic):
        for i in range(5):
            p.produce(t, value=f"{t}-{i}".encode(), partition=0)
    assert p.flush(30) == 0
    return gw, topic, open_topic


def read(gw, user, topic, group=None, n=5, timeout=20):
    """Values read and the first error: subscribed with `group`, or assigned without one."""
    conf = {"bootstrap.servers": gw.bootstrap, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "group.id": group or f"unused-{uuid.uuid4().hex[:6]}",
            **sasl(user)}
    c = Consumer(conf)
    values, error = [], None
    try:
        if group:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, 0, 0)])
        end = time.time() + timeout
        while time.time() < end and len(values) < n and error is None:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    error = m.error().code()
                continue
            values.append(m.value())
        if group and values and error is None:
            try:
                c.commit(asynchronous=False)
            except KafkaException as e:
                error = e.args[0].code()
    finally:
        c.close()
    return values, error


def test_only_the_contracts_consumers_read_its_topic(broker, logdir, tmp_path):
    gw, topic, open_topic = setup(broker, logdir, tmp_path)
    try:
        # bob is not a consumer: Fetch refused, no record.
        values, error = read(gw, "bob", topic)
        assert values == [] and error == KafkaError.TOPIC_AUTHORIZATION_FAILED, (values, error)
        # ListOffsets too.
        c = Consumer({"bootstrap.servers": gw.bootstrap, "group.id": "wm", **sasl("bob")})
        try:
            c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            raise AssertionError("ListOffsets was not refused")
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, e
        finally:
            c.close()
        # alice reads everything with an admitted group, and commits.
        values, error = read(gw, "alice", topic, group=f"readers-{uuid.uuid4().hex[:6]}")
        assert error is None and sorted(values) == [f"{topic}-{i}".encode() for i in range(5)]
        # alice with a group the contract does not admit: the group is refused.
        values, error = read(gw, "alice", topic, group=f"other-{uuid.uuid4().hex[:6]}")
        assert error == KafkaError.GROUP_AUTHORIZATION_FAILED, (values, error)
        # A topic without consumers: open to bob.
        values, error = read(gw, "bob", open_topic)
        assert error is None and len(values) == 5
        # naming.groups: a group id that breaks the pattern is refused.
        values, error = read(gw, "alice", open_topic, group="Bad_Group")
        assert error == KafkaError.INVALID_GROUP_ID, (values, error)
        metrics = gw.metrics()
        assert 'policy="consumers"' in metrics
        products = {p["topic"]: p for p in json.loads(gw.admin("/catalog")[1])["data_products"]}
        assert products[topic]["consumers"] == ["User:alice", "Group:readers-*"]
        # Hidden from bob's Metadata, shown in alice's; the topics bob may use stay visible.
        private = topic.replace(".t", ".private", 1)
        for user, shown in [("bob", False), ("alice", True)]:
            admin = AdminClient({"bootstrap.servers": gw.bootstrap, **sasl(user)})
            names = set(admin.list_topics(timeout=10).topics)
            assert (private in names) == shown, (user, sorted(names))
            assert topic in names and open_topic in names
    finally:
        assert gw.stop() == 0


def test_the_java_client_is_refused_with_topic_authorization_and_an_allowed_one_reads(broker, logdir, tmp_path):
    from kafka_cluster import USERS, classpath, java
    gw, topic, _ = setup(broker, logdir, tmp_path)
    driver = [java(), "-cp", classpath(), str(ROOT / "tests" / "clients" / "java" / "ClientCheck.java")]
    try:
        def run(user, *extra):
            env = {"MESHGATE_SASL_USER": user, "MESHGATE_SASL_PASSWORD": dict(USERS)[user]}
            out = subprocess.run([*driver, "consume-assigned", gw.bootstrap, topic, "5", *extra],
                                 capture_output=True, text=True, timeout=120,
                                 env={**__import__("os").environ, **env})
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
            return json.loads(out.stdout.strip().splitlines()[-1])
        bob = run("bob")
        assert bob.get("error") == "TopicAuthorizationException" and bob["values"] == [], bob
        # From offset 0 without asking for it: the first request is a Fetch, in a session.
        bob = run("bob", "from-zero")
        assert bob.get("error") == "TopicAuthorizationException" and bob["values"] == [], bob
        alice = run("alice")
        assert "error" not in alice and sorted(alice["values"]) == [f"{topic}-{i}" for i in range(5)]
    finally:
        assert gw.stop() == 0


def lag_metric(gw, contract, group):
    for line in gw.metrics().splitlines():
        if (line.startswith("meshgate_contract_consumer_lag_records{")
                and f'contract="{contract}"' in line and f'group="{group}"' in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def admin_lag(bootstrap, group, topic, partitions):
    """The lag the Admin API computes: end offsets minus the group's commits, over the
    partitions it committed."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    committed = {tp.partition: tp.offset for tp in res.topic_partitions
                 if tp.topic == topic and tp.offset >= 0}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lag-probe"})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()
    return sum(max(0, ends[p] - off) for p, off in committed.items())


def test_lag_per_group_matches_the_admin_api_while_a_consumer_pauses_and_resumes(broker, logdir, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic, contract, group = f"lag.t{run}.v1", f"lag-{run}", f"lag-group-{run}"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "lag.yaml").write_text(
        f"contract:\n  name: {contract}\n  owner: lag-team\n  topic: {topic}\n")
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    try:
        create_topic(broker.bootstrap, topic, partitions=2)

        def produce(n, offset):
            p = Producer({"bootstrap.servers": gw.bootstrap, "linger.ms": 0})
            for i in range(n):
                p.produce(topic, key=f"k{i}".encode(), value=json.dumps({"n": offset + i}).encode())
            assert p.flush(30) == 0

        produce(20, 0)
        c = Consumer({"bootstrap.servers": gw.bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got, end = 0, time.time() + 30
        while got < 8 and time.time() < end:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
        c.commit(asynchronous=False)
        # Paused: it fetches nothing more while 10 records arrive.
        c.pause(c.assignment())
        produce(10, 20)
        expected = admin_lag(broker.bootstrap, group, topic, 2)
        assert expected > 0
        assert lag_metric(gw, contract, group) == expected
        # Resumed: it reads the rest and commits; both say 0.
        c.resume(c.assignment())
        end = time.time() + 30
        while got < 30 and time.time() < end:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
        c.commit(asynchronous=False)
        assert got == 30
        assert admin_lag(broker.bootstrap, group, topic, 2) == 0
        assert lag_metric(gw, contract, group) == 0
        products = {p["name"]: p for p in json.loads(gw.admin("/catalog")[1])["data_products"]}
        usage = products[contract]["usage"]
        assert usage["active_groups"] == 1 and usage["groups"][0]["group"] == group
        assert usage["principals"] == ["User:ANONYMOUS"] and usage["fetch_requests"] > 0
        c.close()
    finally:
        assert gw.stop() == 0


def test_chargeback_counts_the_bytes_each_principal_produced_and_fetched(broker, logdir, tmp_path):
    """Bytes in for the producing principal and bytes out for the consuming one, under the
    owning team, equal the bytes of the partition's log on the broker (batches are stored as
    sent, and each was fetched once); `meshgate chargeback` exports them."""
    run = uuid.uuid4().hex[:8]
    topic, team = f"charge.t{run}.v1", f"billing-{run}"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "c.yaml").write_text(
        f"contract:\n  name: charge-{run}\n  owner: {team}\n  topic: {topic}\n"
        "  producers: [User:alice]\n  consumers: [User:bob]\n")
    sasl_addr = f"127.0.0.1:{broker.cluster.nodes[0].ports['SASL_PLAINTEXT']}"
    gw = start_gateway(sasl_addr, logdir, policies=policies)
    try:
        create_topic(broker.bootstrap, topic, partitions=1)
        p = Producer({"bootstrap.servers": gw.bootstrap, "linger.ms": 0, **sasl("alice")})
        for i in range(20):
            p.produce(topic, value=json.dumps({"n": i, "pad": "x" * (i * 10)}).encode(), partition=0)
            p.poll(0)
        assert p.flush(30) == 0
        values, error = read(gw, "bob", topic, n=20)
        assert error is None and len(values) == 20
        log = broker.cluster.nodes[0].dir / f"{topic}-0" / "00000000000000000000.log"
        stored = log.stat().st_size
        binary = ROOT / "target" / "debug" / "meshgate"
        out = subprocess.run([binary, "chargeback", "--since", "1h", "--format", "json",
                              "--admin", f"127.0.0.1:{gw.admin_port}"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = {(r["team"], r["principal"]): r for r in json.loads(out.stdout)["rows"]}
        assert rows[(team, "User:alice")]["bytes_in"] == stored
        assert rows[(team, "User:alice")]["produce_requests"] >= 1
        assert rows[(team, "User:bob")]["bytes_out"] == stored
        assert rows[(team, "User:bob")]["fetch_requests"] >= 1
        csv = subprocess.run([binary, "chargeback", "--since", "1h",
                              "--admin", f"127.0.0.1:{gw.admin_port}"],
                             capture_output=True, text=True, timeout=30).stdout
        assert csv.splitlines()[0] == "team,principal,bytes_in,bytes_out,produce_requests,fetch_requests"
        assert f"{team},User:alice,{stored}," in csv
        assert f'principal="User:bob"' in gw.metrics()
    finally:
        assert gw.stop() == 0


def test_client_ids_that_break_the_naming_rule_are_refused_with_the_rule(broker, logdir, tmp_path):
    """`naming.client_ids`: a producer and a consumer whose client.id breaks the pattern get
    POLICY_VIOLATION, and nothing is written or read; well-named clients are served."""
    run = uuid.uuid4().hex[:8]
    topic = f"clients.t{run}.v1"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "naming.yaml").write_text(
        "naming:\n  topics: { pattern: '.*' }\n"
        "  client_ids: { pattern: '^[a-z]+-(svc|app)$' }\n")
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    try:
        create_topic(broker.bootstrap, topic, partitions=1)
        outcome = {}
        for client_id in ("orders-svc", "My Laptop"):
            p = Producer({"bootstrap.servers": gw.bootstrap, "client.id": client_id, "acks": "all"})
            p.produce(topic, value=client_id.encode(),
                      on_delivery=lambda e, m, c=client_id: outcome.__setitem__(c, e))
            p.flush(15)
        assert outcome["orders-svc"] is None
        assert outcome["My Laptop"].code() == KafkaError.POLICY_VIOLATION, outcome["My Laptop"]
        assert "client id `My Laptop` breaks the naming rule" in gw.log_text()
        # On the topic: the well-named producer's record only.
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{run}",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(topic, 0, 0)])
        values, end = [], time.time() + 15
        while time.time() < end and len(values) < 1:
            m = c.poll(0.5)
            if m is not None and not m.error():
                values.append(m.value())
        time.sleep(1)
        m = c.poll(0.5)
        c.close()
        assert values == [b"orders-svc"] and (m is None or m.error())
        # A badly named consumer reads nothing and is told why.
        bad = Consumer({"bootstrap.servers": gw.bootstrap, "client.id": "Bad Reader",
                        "group.id": f"g2-{run}", "auto.offset.reset": "earliest"})
        try:
            # ListOffsets answers the rule's error to the application.
            with pytest.raises(KafkaException) as e:
                bad.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION, e.value
            # Fetch is refused too (librdkafka retries it quietly): no record arrives.
            bad.assign([TopicPartition(topic, 0, 0)])
            got, end = [], time.time() + 8
            while time.time() < end:
                m = bad.poll(0.5)
                if m is not None and not m.error():
                    got.append(m.value())
            assert got == []
        finally:
            bad.close()
        assert gw.log_text().count("client id `Bad Reader` breaks the naming rule") >= 2
    finally:
        assert gw.stop() == 0
