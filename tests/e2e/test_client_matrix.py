"""The client matrix: each client driven from its own language, all against Apache Kafka behind
meshgate. For each: admin (create, describe, delete; a create that breaks a policy refused with
POLICY_VIOLATION and the rule), an idempotent acks=all producer whose records come back exactly
once, a contract rejection (what the client shows its user), the same producer carrying on after
it, consumer groups whose committed offsets survive a restart, transactions with read_committed,
only meshgate's addresses, and one request across partitions with one partition refused, compared
with the broker's own per-partition refusal (a keyless record on a compacted topic).

The Java (tests/clients/java), Go (franz-go, tests/clients/go) and JavaScript (kafkajs,
tests/clients/js) drivers share one command set and one JSON answer, so each test below runs for
all three. confluent-kafka (librdkafka) and kafka-python are driven from Python, here and
throughout the suite.
"""

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

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

@dataclass(frozen=True)
class Client:
    """What one client library shows its user, as each driver reports it."""
    name: str
    policy_error: str          # a create refused with POLICY_VIOLATION
    shows_policy_message: bool  # the broker's error_message reaches the user
    record_error: str          # a produce refused with INVALID_RECORD
    shows_record_message: bool  # error_message / record_errors reach the user
    refused_commit: str        # in what a refused transactional send shows
    protocols: tuple = ("classic",)


CLIENTS = {
    # Java: the exception class; record_errors' own entry is the message.
    "java": Client("java", "PolicyViolationException", True, "InvalidRecordException", True,
                   "InvalidRecordException", ("classic", "consumer")),
    # franz-go: a *kerr.Error named by its code; CreateTopics' error_message is kept, Produce's
    # error_message and record_errors are not shown (only the code's fixed description).
    "go": Client("go", "POLICY_VIOLATION", True, "INVALID_RECORD", False, "INVALID_RECORD"),
    # kafkajs: KafkaJSProtocolError with the code's type; it reads Produce up to v7 (no
    # error_message) and keeps no CreateTopics error_message either.
    "js": Client("js", "POLICY_VIOLATION", False, "INVALID_RECORD", False, "KafkaJSProtocolError"),
}

SUFFIXES = ["admin", "", "group", "kip848", "txn", "spread"]


def topic_of(client: str, suffix: str) -> str:
    return f"matrix.{client}{'-' + suffix if suffix else ''}.v1"


def driver(client: str) -> list[str]:
    """The command that runs a client's driver (built or installed by scripts/setup clients)."""
    if client == "java":
        return [java(), "-cp", classpath(), str(ROOT / "tests" / "clients" / "java" / "ClientCheck.java")]
    if client == "go":
        cache = Path(os.environ.get("MESHGATE_CACHE") or Path.home() / ".cache" / "meshgate")
        binary = cache / "clients" / "clientcheck-go"
        if not binary.exists():
            pytest.fail(f"{binary} is missing: run scripts/setup clients")
        return [str(binary)]
    if not (ROOT / "tests" / "clients" / "js" / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs is not installed: run scripts/setup clients")
    return ["node", str(ROOT / "tests" / "clients" / "js" / "clientcheck.js")]


@pytest.fixture(scope="module")
def matrix(broker, logdir):
    policies = logdir / f"policies-matrix-{uuid.uuid4().hex[:6]}"
    shutil.copytree(ROOT / "policies", policies)
    topics = [topic_of(c, s) for c in CLIENTS for s in SUFFIXES]
    (policies / "contracts" / "matrix.yaml").write_text("---\n".join(
        CONTRACT.format(name=t.replace(".", "-"), topic=t) for t in topics))
    # kafkajs is judged all or nothing, as README recommends (it is not the default: PRODUCT.md
    # gives every partition its own verdict unless configured).
    config = policies.parent / f"{policies.name}-gateway.yaml"
    config.write_text("all_or_nothing_client_ids: ['^kafkajs']\n")
    gw = start_gateway(broker.bootstrap, logdir, policies=policies,
                       extra_args=["--config", str(config)])
    for t in topics:
        if not t.endswith("-admin.v1"):
            create_topic(gw.bootstrap, t, partitions=3)
    yield gw
    assert gw.stop() == 0, gw.log_text()[-3000:]


def run_client(client: str, *args, env: dict | None = None) -> dict:
    out = subprocess.run([*driver(client), *args], capture_output=True, text=True, timeout=180,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def order(run, i, total=10.0) -> str:
    return json.dumps({"order_id": f"{run}-{i}", "customer_id": "c", "order_total": total})


@pytest.mark.parametrize("client", CLIENTS)
def test_admin_creates_describes_deletes_and_sees_policy_refusals(matrix, client):
    c = CLIENTS[client]
    r = run_client(client, "admin", matrix.bootstrap, topic_of(client, "admin"), f"Bad_{client}_Topic")
    assert r["created"] and r["partitions"] == 3 and r["deleted"], r
    assert r["bad_error"] == c.policy_error, r
    if c.shows_policy_message:
        assert "naming rule" in r["bad_message"] and "naming.yaml:" in r["bad_message"], r


@pytest.mark.parametrize("client", CLIENTS)
def test_idempotent_producer_rejection_and_carrying_on(matrix, client):
    c = CLIENTS[client]
    topic = topic_of(client, "")
    run = uuid.uuid4().hex[:8]
    values = [order(run, 0), order(run, 1, total=0), order(run, 2), order(run, 3)]
    r = run_client(client, "produce", matrix.bootstrap, topic, "0", *values)["results"]
    assert [x["ok"] for x in r] == [True, False, True, True], r
    assert r[1]["error"] == c.record_error, r[1]
    if c.shows_record_message:
        # The record's own entry of record_errors: the contract, the rule, the policy file line.
        assert "order_total > 0" in r[1]["message"] and "matrix.yaml:" in r[1]["message"], r[1]
    # The same idempotent producer carried on: offsets follow without a gap or a duplicate.
    assert r[3]["offset"] == r[2]["offset"] + 1 == r[0]["offset"] + 2, r
    got = [v for v in consume(matrix.bootstrap, [topic], expected=3) if run.encode() in v]
    assert sorted(got) == sorted(v.encode() for v in [values[0], values[2], values[3]])


@pytest.mark.parametrize("client,protocol", [(c, p) for c in CLIENTS for p in CLIENTS[c].protocols])
def test_consumer_group_offsets_survive_a_restart(matrix, client, protocol):
    topic = topic_of(client, "group" if protocol == "classic" else "kip848")
    run = uuid.uuid4().hex[:8]
    values = [order(run, i) for i in range(10)]
    r = run_client(client, "produce", matrix.bootstrap, topic, "0", *values)["results"]
    assert all(x["ok"] for x in r), r
    group = f"{client}-{protocol}-{run}"
    first = run_client(client, "consume", matrix.bootstrap, topic, group, protocol, "4")
    second = run_client(client, "consume", matrix.bootstrap, topic, group, protocol, "6")
    assert first["values"] + second["values"] == values, (first, second)
    assert second["extra_seen"] == 0, "nothing past what was committed and produced"


@pytest.mark.parametrize("client", CLIENTS)
def test_transactions_commit_and_abort_for_read_committed(matrix, client):
    r = run_client(client, "txn", matrix.bootstrap, topic_of(client, "txn"),
                   f"txn-{client}-{uuid.uuid4().hex[:8]}")
    ids = sorted(json.loads(v)["order_id"] for v in r["read_committed"])
    # Committed and the transaction after the refusal; not the aborted one, and nothing of the
    # transaction whose record meshgate refused (not even its valid record on partition 1).
    assert ids == ["after-0", "committed-0", "committed-1", "committed-2"], r
    assert r["refused_commit"] and CLIENTS[client].refused_commit in r["refused_commit"], r


@pytest.mark.parametrize("client", CLIENTS)
def test_client_only_ever_learns_gateway_addresses(matrix, broker, client):
    r = run_client(client, "addresses", matrix.bootstrap, topic_of(client, ""))
    ports = {int(a.rsplit(":", 1)[1]) for a in r["addresses"]}
    assert ports and all(matrix.port <= p < matrix.port + 300 for p in ports), r
    assert not ports & broker.ports(), r


def compacted_topic(broker, run) -> str:
    name = f"direct.compact{run}.v1"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics(
        [NewTopic(name, 3, 1, config={"cleanup.policy": "compact"})])[name].result(15)
    return name


@pytest.mark.parametrize("client", ["java", "go"])
def test_partial_rejection_matches_the_brokers_own(matrix, broker, client):
    """One request over three partitions with the middle one refused: by the broker itself
    (a keyless record on a compacted topic, direct to Kafka), and by meshgate (a contract rule).
    The client must show the same thing in both cases, land the other partitions exactly once,
    and carry on with later sends neither dropped as duplicates nor refused as out of
    sequence."""
    run = uuid.uuid4().hex[:8]
    compacted = compacted_topic(broker, run)
    direct_values = [f"a-{run}", f"nokey:b-{run}", f"c-{run}"]
    direct_later = [f"{x}-{run}-later" for x in "abc"]
    direct = run_client(client, "produce-spread", broker.bootstrap, compacted, "3",
                        *direct_values, *direct_later)
    topic = topic_of(client, "spread")
    values = [order(run, 0), order(run, 1, total=0), order(run, 2)]
    later = [order(run, 10), order(run, 11), order(run, 12)]
    through = run_client(client, "produce-spread", matrix.bootstrap, topic, "3", *values, *later)
    for r in (direct, through):
        assert [x["ok"] for x in r["results"]] == [True, False, True], r
        assert r["results"][1]["error"] == CLIENTS[client].record_error, r
        assert all(x["ok"] for x in r["later"]), r
    # Every accepted record once, the refused one absent, on both paths.
    assert sorted(consume(broker.bootstrap, [compacted], expected=5)) == \
        sorted(v.encode() for v in [direct_values[0], direct_values[2], *direct_later])
    got = sorted(v for v in consume(matrix.bootstrap, [topic], expected=5) if run.encode() in v)
    assert got == sorted(v.encode() for v in [values[0], values[2], *later])


def test_kafkajs_partial_rejection_loses_data_direct_but_not_through_meshgate(matrix, broker):
    """kafkajs 2.2.4 fails a whole send() when one partition is refused, and rewinds the
    idempotent sequence numbers of every partition of that request, written ones included
    (producer/sendMessages.js). Its next records on the written partitions reuse their sequence
    numbers, and Kafka drops them as duplicates while answering success.

    Direct to Kafka, with the broker's own refusal: a-later and c-later are acknowledged and
    lost. Through meshgate, a client id matching `all_or_nothing_client_ids` (here `^kafkajs`,
    kafkajs's own default id, as README recommends) has the whole request refused: kafkajs shows the same failed send,
    nothing was written, its sequences stay true, and every later record lands once. A client
    id that does not match gets exactly what the broker itself gives."""
    run = uuid.uuid4().hex[:8]
    compacted = compacted_topic(broker, run)
    direct_values = [f"a-{run}", f"nokey:b-{run}", f"c-{run}"]
    direct_later = [f"{x}-{run}-later" for x in "abc"]
    direct = run_client("js", "produce-spread", broker.bootstrap, compacted, "3",
                        *direct_values, *direct_later)
    topic = topic_of("js", "spread")
    values = [order(run, 0), order(run, 1, total=0), order(run, 2)]
    later = [order(run, 10), order(run, 11), order(run, 12)]
    through = run_client("js", "produce-spread", matrix.bootstrap, topic, "3", *values, *later)
    for r in (direct, through):
        assert [x["error"] for x in r["results"]] == ["INVALID_RECORD"] * 3, r
        assert all(x["ok"] for x in r["later"]), r
    # Direct: a and c were written (though reported failed); the later records of their
    # partitions were acknowledged and dropped as duplicates.
    assert sorted(consume(broker.bootstrap, [compacted], expected=3)) == \
        sorted(v.encode() for v in [direct_values[0], direct_values[2], direct_later[1]])
    # Through meshgate: nothing of the refused send, every later record once.
    got = sorted(v for v in consume(matrix.bootstrap, [topic], expected=3) if run.encode() in v)
    assert got == sorted(v.encode() for v in later)

    # The same client under its own client id, not listed: no worse than the broker's refusal.
    run2 = uuid.uuid4().hex[:8]
    values = [order(run2, 0), order(run2, 1, total=0), order(run2, 2)]
    later = [order(run2, 10), order(run2, 11), order(run2, 12)]
    own = run_client("js", "produce-spread", matrix.bootstrap, topic, "3", *values, *later,
                     env={"CLIENT_ID": "orders-service"})
    assert [x["error"] for x in own["results"]] == ["INVALID_RECORD"] * 3, own
    got = sorted(v for v in consume(matrix.bootstrap, [topic], expected=3) if run2.encode() in v)
    assert got == sorted(v.encode() for v in [values[0], values[2], later[1]])


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
    topic = topic_of("java", "spread")
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
