"""Dead-letter topics end to end, against Apache Kafka with real clients: a contract's
`on_reject.dead_letter` receives its refused records as they were sent (key, value, headers,
timestamp) plus meshgate's headers, written by meshgate's own idempotent producer in its own name
(SCRAM here, while the client authenticates with PLAIN as someone else). Accepted records are in
the main topic exactly once, refused ones never; nothing is lost or doubled across a broker
restart; a dead-letter write that fails answers the producer with a retriable error, and the
record lands exactly once after the retry; `meshgate replay --to` moves the records that pass now.
"""

import json
import shutil
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from clients import create_topic
from conftest import ROOT, start_gateway, start_kafka

HEADERS = ["meshgate.contract", "meshgate.contract.version", "meshgate.policy", "meshgate.rule",
           "meshgate.reason", "meshgate.refused", "meshgate.topic", "meshgate.partition",
           "meshgate.principal", "meshgate.client_id", "meshgate.generation",
           "meshgate.policy_hash"]


def contract(name, topic, dead_letter, respond="error", extra=""):
    return f"""
contract:
  name: {name}
  owner: dl-team
  topic: {topic}
  schema:
    format: json
    version: 2.1.0
    file: schemas/order-events-v1.avsc
    classification: {{ customer_id: pii }}
  on_reject: {{ dead_letter: {dead_letter}, respond: {respond}{extra} }}
  quality:
    validity_rules: [order_total > 0]
"""


def policy_dir(tmp_path, *contracts):
    policies = tmp_path / f"policies-{uuid.uuid4().hex[:6]}"
    (policies / "contracts").mkdir(parents=True)
    shutil.copytree(ROOT / "policies" / "contracts" / "schemas", policies / "contracts" / "schemas")
    shutil.copy(ROOT / "policies" / "platform" / "classification.yaml", policies / "classification.yaml")
    (policies / "contracts" / "dl.yaml").write_text("---".join(contracts))
    return policies


def order(run, i, total, secret=None):
    return json.dumps({"order_id": f"{run}-{i}", "customer_id": secret or f"c-{i}",
                       "order_total": total}).encode()


def send(bootstrap, topic, records, conf=None):
    """Produces (key, value, headers) records to partition 0, one request each; returns the
    delivery errors (None: delivered)."""
    c = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
         "retries": 0, "linger.ms": 0, "client.id": "dl-producer"}
    c.update(conf or {})
    p = Producer(c)
    out = []
    for key, value, headers in records:
        box = []
        p.produce(topic, key=key, value=value, headers=headers, partition=0,
                  timestamp=1_700_000_000_123, on_delivery=lambda err, msg: box.append(err))
        p.flush(30)
        out.append(box[0] if box else "undelivered")
    return out


def read_all(bootstrap, topic, partitions=1, conf=None, isolation="read_uncommitted"):
    """Every record of `topic`, read by assignment from the start to the end offsets."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": isolation, **(conf or {})})
    try:
        ends = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, deadline = [], time.time() + 30
        done = {p for p, hi in ends.items() if hi == 0}
        while len(done) < partitions and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append(m)
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        return out
    finally:
        c.close()


def metric(gw, name, **labels):
    for line in gw.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_refused_records_land_in_the_dead_letter_topic_with_every_header(broker, logdir, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"dl.orders{run}.v1", f"dl.orders{run}.dlq"
    bounded, bounded_dlq = f"dl.bounded{run}.v1", f"dl.bounded{run}.dlq"
    policies = policy_dir(
        tmp_path,
        contract("dl-orders", topic, dlq),
        contract("dl-bounded", bounded, bounded_dlq, extra=", max_records_per_second: 3"))
    trail = tmp_path / "audit.jsonl"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"audit:\n  file: {trail}\n")
    gw = start_gateway(broker.bootstrap, logdir, policies=policies,
                       extra_args=["--config", str(config)])
    try:
        for t, n in [(topic, 3), (dlq, 1), (bounded, 1), (bounded_dlq, 1)]:
            create_topic(broker.bootstrap, t, partitions=n)
        secret = f"pii-{run}"
        records = []
        for i in range(10):
            total = 5.0 if i % 2 == 0 else -1.0
            records.append((f"k{i}".encode(), order(run, i, total, secret),
                            [("trace", f"t{i}".encode()), ("trace", b"again"), ("empty", None)]))
        errors = send(gw.bootstrap, topic, records)
        for i, err in enumerate(errors):
            if i % 2 == 0:
                assert err is None, (i, err)
            else:
                assert isinstance(err, KafkaError) and err.code() == KafkaError.INVALID_RECORD, (i, err)

        main = read_all(broker.bootstrap, topic, partitions=3)
        assert sorted(m.key() for m in main) == [f"k{i}".encode() for i in range(0, 10, 2)]
        dead = read_all(broker.bootstrap, dlq)
        assert [m.key() for m in dead] == [f"k{i}".encode() for i in range(1, 10, 2)]
        for m in dead:
            i = int(m.key()[1:])
            assert m.value() == records[i][1]
            assert m.timestamp()[1] == 1_700_000_000_123
            headers = m.headers()
            assert headers[:3] == [("trace", f"t{i}".encode()), ("trace", b"again"), ("empty", None)]
            got = dict(headers[3:])
            assert sorted(got) == sorted(HEADERS), got
            assert got["meshgate.contract"] == b"dl-orders"
            assert got["meshgate.contract.version"] == b"2.1.0"
            assert got["meshgate.policy"] == b"contract"
            assert got["meshgate.rule"] == b"order_total > 0"
            assert got["meshgate.refused"] == b"record"
            assert got["meshgate.topic"] == topic.encode()
            assert got["meshgate.partition"] == b"0"
            assert got["meshgate.principal"] == b"User:ANONYMOUS"
            assert got["meshgate.client_id"] == b"dl-producer"
            assert int(got["meshgate.generation"]) >= 1
            assert len(got["meshgate.policy_hash"]) == 64
            assert b"order_total" in got["meshgate.reason"]
            assert all(secret.encode() not in (v or b"") for _, v in headers[3:])
        assert metric(gw, "meshgate_dead_letter_records_total", topic=topic, outcome="written") == 5
        assert metric(gw, "meshgate_dead_letter_partitions_total", topic=topic,
                      answer="invalid_record") == 5

        # The bound: 3 records a second, one second of burst. Ten refusals sent at once: the
        # first ones are dead-lettered, the rest refused as usual and counted.
        bad = [(f"b{i}".encode(), order(run, i, -1.0), None) for i in range(10)]
        errors = send(gw.bootstrap, bounded, bad)
        assert all(e.code() == KafkaError.INVALID_RECORD for e in errors)
        written = metric(gw, "meshgate_dead_letter_records_total", topic=bounded, outcome="written")
        over = metric(gw, "meshgate_dead_letter_records_total", topic=bounded, outcome="over_bound")
        assert written + over == 10 and over >= 1 and written >= 3, (written, over)
        assert len(read_all(broker.bootstrap, bounded_dlq)) == written

        text = trail.read_text()
        lettered = [json.loads(line) for line in text.splitlines()
                    if json.loads(line)["decision"] == "dead_lettered"]
        assert len(lettered) == 5 + written
        assert secret not in text and secret not in gw.log_text()
    finally:
        assert gw.stop() == 0
