"""Dead-letter topics end to end, against Apache Kafka with real clients: a contract's
`on_reject.dead_letter` receives its refused records as they were sent (key, value, headers,
timestamp) plus meshgate's headers, written by meshgate's own idempotent producer in its own name
(SCRAM here, while the client authenticates with PLAIN as someone else). Accepted records are in
the main topic exactly once, refused ones never; nothing is lost or doubled across a broker
restart; a dead-letter write that fails answers the producer with a retriable error, and the
record lands exactly once after the retry; `meshgate replay --to` moves the records that pass now;
with `own_client.spool`, refused records are answered once on meshgate's disk and reach their
topic after a kill -9, exactly once.
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
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
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
    audit_topic = f"dl.audit{run}.v1"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"audit:\n  file: {trail}\n  topic: {audit_topic}\n")
    create_topic(broker.bootstrap, audit_topic, partitions=1)
    gw = start_gateway(broker.bootstrap, logdir, policies=policies,
                       extra_args=["--config", str(config)])
    stopped = False
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
        status, body = gw.admin("/catalog")
        products = {p["name"]: p for p in json.loads(body)["data_products"]}
        assert products["dl-orders"]["dead_letter"] == {
            "topic": dlq, "respond": "error", "max_records_per_second": 1000,
            "max_bytes_per_second": 10485760}
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

        # Stopping flushes the trail, and waits for the audit topic's acknowledgements.
        stopped = True
        assert gw.stop() == 0
        text = trail.read_text()
        lettered = [json.loads(line) for line in text.splitlines()
                    if json.loads(line)["decision"] == "dead_lettered"]
        assert len(lettered) == 5 + written
        assert secret not in text and secret not in gw.log_text()
        # The audit topic holds the file's lines, in the same order.
        lines = text.splitlines()
        assert [m.value().decode() for m in read_all(broker.bootstrap, audit_topic)] == lines
        assert subprocess.run([ROOT / "target" / "debug" / "meshgate", "audit", "verify", trail],
                              capture_output=True).returncode == 0
    finally:
        if not stopped:
            assert gw.stop() == 0


def test_respond_success_acknowledges_plain_producers_only(broker, logdir, tmp_path):
    """`respond: success` acknowledges a non-idempotent producer's refused partition once its
    records are dead-lettered. An idempotent producer is refused all the same (an acknowledged
    batch the broker never saw would break its sequence numbers) and keeps producing; a
    transactional producer's transaction cannot commit, and its records never become visible."""
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"dl.ok{run}.v1", f"dl.ok{run}.dlq"
    other = f"dl.other{run}.v1"
    policies = policy_dir(tmp_path, contract("dl-ok", topic, dlq, respond="success"))
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    try:
        for t, n in [(topic, 1), (dlq, 1), (other, 1)]:
            create_topic(broker.bootstrap, t, partitions=n)
        # A plain producer: the batch of one good and one bad record is acknowledged, and both
        # records are in the dead-letter topic (the good one marked as refused with its batch).
        p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": False,
                      "linger.ms": 200, "client.id": "plain"})
        box = []
        for i, total in [(0, 3.0), (1, -3.0)]:
            p.produce(topic, key=f"p{i}".encode(), value=order(run, i, total), partition=0,
                      on_delivery=lambda err, msg: box.append(err))
        p.flush(30)
        assert box == [None, None], box
        dead = read_all(broker.bootstrap, dlq)
        assert sorted((m.key(), dict(m.headers())["meshgate.refused"]) for m in dead) == [
            (b"p0", b"batch"), (b"p1", b"record")]
        assert read_all(broker.bootstrap, topic) == []
        assert metric(gw, "meshgate_dead_letter_partitions_total", topic=topic,
                      answer="acknowledged") == 1

        # An idempotent producer: refused, its bad record dead-lettered, and it goes on producing.
        errors = send(gw.bootstrap, topic, [(b"i0", order(run, 10, -1.0), None),
                                            (b"i1", order(run, 11, 1.0), None),
                                            (b"i2", order(run, 12, 2.0), None)],
                      conf={"enable.idempotence": True, "retries": 3})
        assert errors[0].code() == KafkaError.INVALID_RECORD and errors[1:] == [None, None], errors
        assert sorted(m.key() for m in read_all(broker.bootstrap, topic)) == [b"i1", b"i2"]
        assert metric(gw, "meshgate_dead_letter_partitions_total", topic=topic,
                      answer="not_acknowledged") == 1

        # A transactional producer: the refused partition fails the transaction, which aborts; a
        # read_committed consumer sees neither of its records, the dead-letter topic has the bad one.
        t = Producer({"bootstrap.servers": gw.bootstrap, "transactional.id": f"tx-{run}",
                      "client.id": "transactional"})
        t.init_transactions(30)
        t.begin_transaction()
        reports = []
        t.produce(other, key=b"t-good", value=b"fine", on_delivery=lambda e, m: reports.append(e))
        t.produce(topic, key=b"t-bad", value=order(run, 20, -5.0), partition=0,
                  on_delivery=lambda e, m: reports.append(e))
        t.flush(30)
        assert any(e is not None and e.code() == KafkaError.INVALID_RECORD for e in reports), reports
        with pytest.raises(Exception):
            t.commit_transaction(30)
        t.abort_transaction(30)
        committed = read_all(broker.bootstrap, other, isolation="read_committed")
        assert [m.key() for m in committed] == []
        assert b"t-bad" in [m.key() for m in read_all(broker.bootstrap, dlq)]
        assert b"t-bad" not in [m.key() for m in read_all(broker.bootstrap, topic)]
    finally:
        assert gw.stop() == 0


def test_a_failed_dead_letter_write_is_retriable_and_lands_once(broker, logdir, tmp_path):
    """The dead-letter topic does not exist yet: meshgate answers REQUEST_TIMED_OUT (retriable),
    the producer retries on its own, and once the topic is created the record lands in it exactly
    once."""
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"dl.late{run}.v1", f"dl.late{run}.dlq"
    policies = policy_dir(tmp_path, contract("dl-late", topic, dlq))
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    try:
        create_topic(broker.bootstrap, topic, partitions=1)
        # No retries first: the error itself is the retriable one.
        errors = send(gw.bootstrap, topic, [(b"x", order(run, 0, -1.0), None)])
        assert errors[0].code() == KafkaError.REQUEST_TIMED_OUT, errors
        assert metric(gw, "meshgate_dead_letter_partitions_total", topic=topic,
                      answer="retriable") >= 1
        # With retries: the producer keeps sending while the topic does not exist; it is
        # created a few seconds in; the record lands once and the producer gets INVALID_RECORD.
        creator = threading.Timer(3.0, lambda: create_topic(broker.bootstrap, dlq, partitions=1))
        creator.start()
        try:
            errors = send(gw.bootstrap, topic, [(b"y", order(run, 1, -1.0), None)],
                          conf={"retries": 1000, "retry.backoff.ms": 200,
                                "retry.backoff.max.ms": 1000, "message.timeout.ms": 60000})
        finally:
            creator.join()
        assert errors[0].code() == KafkaError.INVALID_RECORD, errors
        dead = read_all(broker.bootstrap, dlq)
        assert [m.key() for m in dead] == [b"y"]
        assert read_all(broker.bootstrap, topic) == []
    finally:
        assert gw.stop() == 0


def test_dead_letters_survive_a_broker_restart_written_in_meshgates_own_scram_name(logdir, tmp_path):
    """The gateway's upstream is a SASL listener. The client authenticates as alice with PLAIN;
    meshgate's own producer as admin with SCRAM-SHA-512 (from its own config, never the
    client's credentials). Records are produced before, during and after a broker restart:
    every accepted one is in the main topic once, every refused one in the dead-letter topic
    once."""
    from kafka_cluster import USERS
    passwords = dict(USERS)
    kafka = start_kafka(logdir, name=f"kafka-dl-{uuid.uuid4().hex[:6]}")
    node = kafka.cluster.nodes[0]
    sasl_addr = f"127.0.0.1:{node.ports['SASL_PLAINTEXT']}"
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"dl.restart{run}.v1", f"dl.restart{run}.dlq"
    policies = policy_dir(tmp_path, contract("dl-restart", topic, dlq))
    secret_file = tmp_path / "own.pw"
    secret_file.write_text(passwords["admin"] + "\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "own_client:\n  sasl:\n    mechanism: SCRAM-SHA-512\n    username: admin\n"
        f"    password_file: {secret_file}\n  write_timeout_secs: 60\n")
    gw = start_gateway(sasl_addr, logdir, policies=policies, extra_args=["--config", str(config)])
    alice = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
             "sasl.username": "alice", "sasl.password": passwords["alice"]}
    try:
        create_topic(kafka.bootstrap, topic, partitions=1)
        create_topic(kafka.bootstrap, dlq, partitions=1)

        def batch(prefix, n):
            return [(f"{prefix}{i}".encode(), order(run, i, 1.0 if i % 3 else -1.0), None)
                    for i in range(n)]

        conf = {**alice, "enable.idempotence": True, "retries": 100000,
                "message.timeout.ms": 120000, "retry.backoff.ms": 200}
        before = send(gw.bootstrap, topic, batch("a", 12), conf=conf)
        during = []
        kafka.cluster.stop_node(node)
        sender = threading.Thread(target=lambda: during.extend(
            send(gw.bootstrap, topic, batch("b", 12), conf=conf)))
        sender.start()
        time.sleep(2)
        kafka.cluster.start_node(node)
        sender.join(180)
        after = send(gw.bootstrap, topic, batch("c", 12), conf=conf)
        for prefix, errors in [("a", before), ("b", during), ("c", after)]:
            assert len(errors) == 12, (prefix, errors)
            for i, e in enumerate(errors):
                if i % 3:
                    assert e is None, (prefix, i, e)
                else:
                    assert e.code() == KafkaError.INVALID_RECORD, (prefix, i, e)

        plain = kafka.bootstrap
        main = sorted(m.key() for m in read_all(plain, topic))
        dead = read_all(plain, dlq)
        want = lambda good: sorted(f"{p}{i}".encode() for p in "abc" for i in range(12)
                                   if bool(i % 3) == good)
        assert main == want(True)
        assert sorted(m.key() for m in dead) == want(False)
        assert {dict(m.headers())["meshgate.principal"] for m in dead} == {b"User:alice"}
        log = gw.log_text()
        assert passwords["admin"] not in log and passwords["alice"] not in log
    finally:
        assert gw.stop() == 0
        kafka.stop()


def test_replay_moves_the_dead_letters_that_pass_now_and_leaves_the_rest(broker, logdir, tmp_path):
    """After a rule is relaxed, `meshgate replay --from DLQ --to TOPIC` writes the dead letters
    that pass the new policies to the topic, as they were first sent (meshgate's headers dropped),
    counts the others by rule, and leaves the dead-letter topic as it was."""
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"dl.replay{run}.v1", f"dl.replay{run}.dlq"
    policies = policy_dir(tmp_path, contract("dl-replay", topic, dlq))
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    try:
        create_topic(broker.bootstrap, topic, partitions=2)
        create_topic(broker.bootstrap, dlq, partitions=1)
        totals = [-1.0, -5.0, -1.5, -7.0, 3.0]
        errors = send(gw.bootstrap, topic, [(f"r{i}".encode(), order(run, i, t), [("h", b"v")])
                                            for i, t in enumerate(totals)])
        assert [e is None for e in errors] == [False, False, False, False, True]
    finally:
        assert gw.stop() == 0
    relaxed = policy_dir(tmp_path, contract("dl-replay", topic, dlq).replace(
        "order_total > 0", "order_total > -2"))
    binary = ROOT / "target" / "debug" / "meshgate"
    out = subprocess.run([binary, "replay", "--from", dlq, "--to", topic, "--policies", relaxed,
                          "--bootstrap", broker.bootstrap, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert (result["records"], result["moved"], result["rejected"]) == (4, 2, 2), result
    assert [(r["rule"], r["records"]) for r in result["by_rule"]] == [("order_total > -2", 2)]
    main = read_all(broker.bootstrap, topic, partitions=2)
    assert sorted(m.key() for m in main) == [b"r0", b"r2", b"r4"]
    moved = [m for m in main if m.key() in (b"r0", b"r2")]
    for m in moved:
        assert m.headers() == [("h", b"v")], m.headers()
        assert m.partition() == 0 and m.timestamp()[1] == 1_700_000_000_123
    assert len(read_all(broker.bootstrap, dlq)) == 4, "the dead-letter topic is left as it was"


def wait_for(what, check, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_spool_answers_at_once_and_delivers_after_a_meshgate_crash(broker, logdir, tmp_path):
    """With `own_client.spool`, a refused record is answered INVALID_RECORD once it is on
    meshgate's disk, even while its dead-letter topic cannot be written (here: it does not exist
    yet). meshgate is then killed (SIGKILL, no drain); the topic is created; a new meshgate on the
    same spool directory writes every spooled record to it exactly once, with its headers, and a
    third start writes nothing again."""
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"dl.spool{run}.v1", f"dl.spool{run}.dlq"
    policies = policy_dir(tmp_path, contract("dl-spool", topic, dlq))
    spool = tmp_path / "spool"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"own_client:\n  spool:\n    dir: {spool}\n    max_bytes: 1048576\n")
    args = ["--config", str(config)]
    create_topic(broker.bootstrap, topic, partitions=1)
    gw = start_gateway(broker.bootstrap, logdir, policies=policies, extra_args=args)
    try:
        records = [(f"k{i}".encode(), order(run, i, 2.0 if i % 2 else -1.0),
                    [("trace", f"t{i}".encode())]) for i in range(8)]
        errors = send(gw.bootstrap, topic, records, conf={"enable.idempotence": True, "retries": 5})
        for i, err in enumerate(errors):
            if i % 2:
                assert err is None, (i, err)
            else:
                # Spooled, so answered as dead-lettered: not the retriable error a direct write
                # to a missing topic gets.
                assert err.code() == KafkaError.INVALID_RECORD, (i, err)
        assert metric(gw, "meshgate_dead_letter_records_total", topic=topic, outcome="spooled") == 4
        assert metric(gw, "meshgate_dead_letter_spool_bytes") > 0
        assert metric(gw, "meshgate_dead_letter_records_total", topic=topic, outcome="written") == 0
    finally:
        gw.proc.kill()
        gw.proc.wait()
    create_topic(broker.bootstrap, dlq, partitions=1)
    gw = start_gateway(broker.bootstrap, logdir, policies=policies, extra_args=args)
    try:
        assert "previous run left" in gw.log_text()
        wait_for("the spool to drain", lambda: metric(
            gw, "meshgate_dead_letter_records_total", topic=topic, outcome="written") == 4)
        assert metric(gw, "meshgate_dead_letter_spool_bytes") == 0
    finally:
        assert gw.stop() == 0
    dead = read_all(broker.bootstrap, dlq)
    assert [m.key() for m in dead] == [b"k0", b"k2", b"k4", b"k6"]
    for m in dead:
        i = int(m.key()[1:])
        assert m.value() == records[i][1]
        assert m.timestamp()[1] == 1_700_000_000_123
        headers = dict(m.headers())
        assert headers["trace"] == f"t{i}".encode()
        assert sorted(k for k in headers if k.startswith("meshgate.")) == sorted(HEADERS)
    assert sorted(m.key() for m in read_all(broker.bootstrap, topic)) == [b"k1", b"k3", b"k5", b"k7"]
    # A third start finds nothing left to deliver.
    gw = start_gateway(broker.bootstrap, logdir, policies=policies, extra_args=args)
    try:
        assert metric(gw, "meshgate_dead_letter_spool_bytes") == 0
        assert "previous run left" not in gw.log_text()
    finally:
        assert gw.stop() == 0
    assert len(read_all(broker.bootstrap, dlq)) == 4
