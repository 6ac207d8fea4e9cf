"""The client matrix: each client driven from its own language, all against Apache Kafka behind
meshgate. For each: admin (create, describe, delete; a create that breaks a policy refused with
POLICY_VIOLATION and the rule), an idempotent acks=all producer whose records come back exactly
once, a contract rejection (what the client shows its user), the same producer carrying on after
it, consumer groups whose committed offsets survive a restart, transactions with read_committed,
only meshgate's addresses, and one request across partitions with one partition refused, compared
with the broker's own per-partition refusal (a keyless record on a compacted topic).

confluent-kafka (librdkafka) and kafka-python are covered here and throughout the suite; this
module drives the Java client (tests/clients/java/ClientCheck.java).
"""

import json
import shutil
import subprocess
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from clients import consume, create_topic
from conftest import ROOT, start_gateway
from kafka_cluster import classpath, java

CONTRACT = """
contract:
  name: {name}
  owner: matrix-team
  topic: {topic}
  schema: {{ format: json, file: schemas/order-events-v1.avsc }}
  quality:
    validity_rules: [order_total > 0]
"""

TOPICS = ["matrix.java-admin.v1", "matrix.java.v1", "matrix.java-group.v1",
          "matrix.java-kip848.v1", "matrix.java-txn.v1", "matrix.java-spread.v1"]


@pytest.fixture(scope="module")
def matrix(broker, logdir):
    policies = logdir / f"policies-matrix-{uuid.uuid4().hex[:6]}"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "contracts" / "matrix.yaml").write_text("---\n".join(
        CONTRACT.format(name=t.replace(".", "-"), topic=t) for t in TOPICS))
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    for t in TOPICS[1:]:
        create_topic(gw.bootstrap, t, partitions=3)
    yield gw
    assert gw.stop() == 0, gw.log_text()[-3000:]


def java_client(*args) -> dict:
    out = subprocess.run([java(), "-cp", classpath(),
                          str(ROOT / "tests" / "clients" / "java" / "ClientCheck.java"), *args],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def order(run, i, total=10.0) -> str:
    return json.dumps({"order_id": f"{run}-{i}", "customer_id": "c", "order_total": total})


def test_java_admin_creates_describes_deletes_and_sees_policy_refusals(matrix):
    r = java_client("admin", matrix.bootstrap, "matrix.java-admin.v1", "Bad_Java_Topic")
    assert r["created"] and r["partitions"] == 3 and r["deleted"], r
    assert r["bad_error"] == "PolicyViolationException", r
    assert "naming rule" in r["bad_message"] and "naming.yaml:" in r["bad_message"], r


def test_java_idempotent_producer_rejection_and_carrying_on(matrix):
    run = uuid.uuid4().hex[:8]
    values = [order(run, 0), order(run, 1, total=0), order(run, 2), order(run, 3)]
    r = java_client("produce", matrix.bootstrap, "matrix.java.v1", "0", *values)["results"]
    assert [x["ok"] for x in r] == [True, False, True, True], r
    # What the Java client shows its user: InvalidRecordException with the record's own entry
    # of record_errors, which names the contract, the rule and the policy file line.
    assert r[1]["error"] == "InvalidRecordException", r[1]
    assert "order_total > 0" in r[1]["message"] and "matrix.yaml:" in r[1]["message"], r[1]
    # The same idempotent producer carried on: offsets follow without a gap or a duplicate.
    assert r[3]["offset"] == r[2]["offset"] + 1 == r[0]["offset"] + 2, r
    got = [v for v in consume(matrix.bootstrap, ["matrix.java.v1"], expected=3) if run.encode() in v]
    assert sorted(got) == sorted(v.encode() for v in [values[0], values[2], values[3]])


@pytest.mark.parametrize("protocol,topic", [("classic", "matrix.java-group.v1"),
                                            ("consumer", "matrix.java-kip848.v1")])
def test_java_consumer_group_offsets_survive_a_restart(matrix, protocol, topic):
    run = uuid.uuid4().hex[:8]
    values = [order(run, i) for i in range(10)]
    r = java_client("produce", matrix.bootstrap, topic, "0", *values)["results"]
    assert all(x["ok"] for x in r), r
    group = f"java-{protocol}-{run}"
    first = java_client("consume", matrix.bootstrap, topic, group, protocol, "4")
    second = java_client("consume", matrix.bootstrap, topic, group, protocol, "6")
    assert first["values"] + second["values"] == values, (first, second)
    assert second["extra_seen"] == 0, "nothing past what was committed and produced"


def test_java_transactions_commit_and_abort_for_read_committed(matrix):
    r = java_client("txn", matrix.bootstrap, "matrix.java-txn.v1", f"txn-{uuid.uuid4().hex[:8]}")
    ids = sorted(json.loads(v)["order_id"] for v in r["read_committed"])
    # Committed and the transaction after the refusal; not the aborted one, and nothing of the
    # transaction whose record meshgate refused (not even its valid record on partition 1).
    assert ids == ["after-0", "committed-0", "committed-1", "committed-2"], r
    assert r["refused_commit"] and "InvalidRecordException" in r["refused_commit"], r


def test_java_client_only_ever_learns_gateway_addresses(matrix, broker):
    r = java_client("addresses", matrix.bootstrap, "matrix.java.v1")
    ports = {int(a.rsplit(":", 1)[1]) for a in r["addresses"]}
    assert ports and all(matrix.port <= p < matrix.port + 300 for p in ports), r
    assert not ports & broker.ports(), r


def test_java_partial_rejection_matches_the_brokers_own(matrix, broker):
    """One request over three partitions with the middle one refused: by the broker itself
    (a keyless record on a compacted topic, direct to Kafka), and by meshgate (a contract rule).
    The Java client must show the same thing in both cases, land the other partitions exactly
    once, and carry on with later sends neither dropped as duplicates nor refused as out of
    sequence."""
    run = uuid.uuid4().hex[:8]
    compacted = f"direct.compact{run}.v1"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics(
        [NewTopic(compacted, 3, 1, config={"cleanup.policy": "compact"})])[compacted].result(15)
    direct_values = [f"a-{run}", f"nokey:b-{run}", f"c-{run}"]
    direct_later = [f"{x}-{run}-later" for x in "abc"]
    direct = java_client("produce-spread", broker.bootstrap, compacted, "3",
                         *direct_values, *direct_later)
    values = [order(run, 0), order(run, 1, total=0), order(run, 2)]
    later = [order(run, 10), order(run, 11), order(run, 12)]
    through = java_client("produce-spread", matrix.bootstrap, "matrix.java-spread.v1", "3",
                          *values, *later)
    for r in (direct, through):
        assert [x["ok"] for x in r["results"]] == [True, False, True], r
        assert r["results"][1]["error"] == "InvalidRecordException", r
        assert all(x["ok"] for x in r["later"]), r
    # Every accepted record once, the refused one absent, on both paths.
    assert sorted(consume(broker.bootstrap, [compacted], expected=5)) == \
        sorted(v.encode() for v in [direct_values[0], direct_values[2], *direct_later])
    got = sorted(v for v in consume(matrix.bootstrap, ["matrix.java-spread.v1"], expected=5)
                 if run.encode() in v)
    assert got == sorted(v.encode() for v in [values[0], values[2], *later])


def spread_librdkafka(bootstrap, topic, values, later):
    """One idempotent librdkafka producer: values[i] to partition i in one request (linger), a
    "nokey:" value without a key; then `later` the same way. Returns (errors, later errors)."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 500, "message.timeout.ms": 30_000})

    def send(vals):
        box = {}
        for i, v in enumerate(vals):
            key = None if v.startswith("nokey:") else b"key"
            p.produce(topic, value=v.encode(), key=key, partition=i,
                      on_delivery=lambda e, m, i=i: box.__setitem__(i, e))
        p.flush(40)
        return [box[i].name() if box[i] else None for i in range(len(vals))]

    first = send(values)
    return first, send(later)


def spread_kafka_python(bootstrap, topic, values, later):
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                      linger_ms=500, retries=5)

    def send(vals):
        fs = [p.send(topic, value=v.encode(), key=None if v.startswith("nokey:") else b"key",
                     partition=i) for i, v in enumerate(vals)]
        p.flush()
        out = []
        for f in fs:
            try:
                f.get(timeout=30)
                out.append(None)
            except Exception as e:
                out.append(type(e).__name__)
        return out

    try:
        return send(values), send(later)
    finally:
        p.close()


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_python_clients_partial_rejection_matches_the_brokers_own(matrix, broker, client):
    """The comparison of test_java_partial_rejection_matches_the_brokers_own for the Python
    clients: what each shows, and that neither loses, duplicates or refuses later records."""
    spread = spread_librdkafka if client == "librdkafka" else spread_kafka_python
    run = uuid.uuid4().hex[:8]
    compacted = f"direct.compactpy{run}.v1"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics(
        [NewTopic(compacted, 3, 1, config={"cleanup.policy": "compact"})])[compacted].result(15)
    direct_values = [f"a-{run}", f"nokey:b-{run}", f"c-{run}"]
    direct_later = [f"{x}-{run}-later" for x in "abc"]
    direct = spread(broker.bootstrap, compacted, direct_values, direct_later)
    topic = "matrix.java-spread.v1"
    values = [order(run, 0), order(run, 1, total=0), order(run, 2)]
    later = [order(run, 10), order(run, 11), order(run, 12)]
    through = spread(matrix.bootstrap, topic, values, later)
    # The refusal looks the same to the client whoever made it.
    assert direct == through, (direct, through)
    first, after = through
    assert first[0] is None and first[2] is None and first[1] is not None, through
    if client == "kafka-python":
        # kafka-python 3.0 treats INVALID_RECORD on an idempotent producer as fatal ("Aborting
        # producer batches due to fatal error"): every later send of that producer fails, with
        # an error the application sees, against the broker's own refusal exactly as through
        # meshgate. Nothing is lost silently; a new producer instance is needed.
        assert after == ["InvalidRecordError"] * 3, through
        direct_landed, landed = [], []
    else:
        assert after == [None, None, None], "later sends are neither dropped nor refused"
        direct_landed, landed = direct_later, later
    direct_expected = [direct_values[0], direct_values[2], *direct_landed]
    assert sorted(consume(broker.bootstrap, [compacted], expected=len(direct_expected))) == \
        sorted(v.encode() for v in direct_expected)
    expected = [values[0], values[2], *landed]
    got = sorted(v for v in consume(matrix.bootstrap, [topic], expected=len(expected))
                 if run.encode() in v)
    assert got == sorted(v.encode() for v in expected), "each accepted record once"
