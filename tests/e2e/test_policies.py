"""Policy enforcement end to end: real Apache Kafka, the real binary with a policy directory, and real
clients (confluent-kafka and kafka-python)."""

import json
import shutil
import signal
import subprocess
import time
import uuid


import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from clients import consume, create_topic
from conftest import ROOT, start_gateway

E2E_CONTRACTS = """
contract:
  name: shop-orders
  owner: shop-team
  topic: shop.orders.v1
  schema:
    format: json
    file: schemas/order-events-v1.avsc
  quality:
    validity_rules:
      - order_total > 0
      - customer_id is not null
---
contract:
  name: shop-orders-py
  owner: shop-team
  topic: shop.orders-py.v1
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0, customer_id is not null]
---
contract:
  name: shop-split
  owner: shop-team
  topic: shop.split.v1
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0, customer_id is not null]
---
contract:
  name: shop-idem
  owner: shop-team
  topic: shop.idem.v1
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0, customer_id is not null]
---
contract:
  name: shop-shadow
  owner: shop-team
  topic: shop.shadow.v1
  mode: shadow
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0, customer_id is not null]
---
contract:
  name: shop-enforced-twin
  owner: shop-team
  topic: shop.twin.v1
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0, customer_id is not null]
"""

MODE_CONTRACT = """
contract:
  name: shop-mode
  owner: shop-team
  topic: shop.mode.v1
  schema: {{ format: json, file: schemas/order-events-v1.avsc }}
  quality:
    validity_rules:
      - rule: order_total > 0
        mode: {mode}
"""

RELOAD_CONTRACT = """
contract:
  name: shop-reload
  owner: shop-team
  topic: shop.reload.v1
  schema: {{ format: json, file: schemas/order-events-v1.avsc }}
  quality:
    validity_rules:
      - order_total > {minimum}
"""


@pytest.fixture(scope="module")
def governed(broker, logdir):
    policies = logdir / f"policies-{uuid.uuid4().hex[:6]}"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "contracts" / "e2e.yaml").write_text(E2E_CONTRACTS)
    (policies / "contracts" / "reload.yaml").write_text(RELOAD_CONTRACT.format(minimum=0))
    (policies / "contracts" / "mode.yaml").write_text(MODE_CONTRACT.format(mode="shadow"))
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    for t in ["shop.orders.v1", "shop.orders-py.v1", "shop.split.v1", "shop.idem.v1", "shop.reload.v1",
              "shop.shadow.v1", "shop.twin.v1", "shop.mode.v1"]:
        create_topic(gw.bootstrap, t, partitions=3)
    yield gw
    assert gw.stop() == 0, gw.log_text()[-3000:]


def order(run, i, total=10.0, customer="c-1", drop_customer=False):
    r = {"order_id": f"{run}-{i}", "customer_id": customer, "order_total": total}
    if drop_customer:
        del r["customer_id"]
    return json.dumps(r).encode()


def metric(gw, name, **labels) -> float:
    for fam in text_string_to_metric_families(gw.metrics()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def produce_each(bootstrap, topic, values, partition=None, extra=None):
    """One flushed batch per record, so each record gets its own verdict. Non-idempotent, so a
    rejection cannot disturb later sequence numbers."""
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False}
    conf.update(extra or {})
    p = Producer(conf)
    out = []
    for v in values:
        box = []
        kwargs = {"partition": partition} if partition is not None else {}
        p.produce(topic, value=v, on_delivery=lambda err, msg: box.append(err), **kwargs)
        p.flush(15)
        out.append(box[0] if box else "undelivered")
    return out


def wait_for(predicate, timeout=20.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def test_valid_records_land_once_and_invalid_ones_are_rejected_and_absent(governed):
    run = uuid.uuid4().hex[:8]
    valid = [order(run, i, total=5 + i) for i in range(20)]
    bad_total = [order(run, 100, total=0), order(run, 101, total=-4.5)]
    bad_customer = [order(run, 102, customer=None), order(run, 103, drop_customer=True)]
    before_total = metric(governed, "meshgate_policy_rejections_total", rule="order_total > 0")
    before_cust = metric(governed, "meshgate_policy_rejections_total", rule="customer_id is not null")

    results = produce_each(governed.bootstrap, "shop.orders.v1", valid + bad_total + bad_customer)
    assert results[:20] == [None] * 20
    for err in results[20:]:
        assert isinstance(err, KafkaError) and err.code() == KafkaError.INVALID_RECORD, err

    # The rejection names the rule that failed (counted per rule, and logged with it).
    assert metric(governed, "meshgate_policy_rejections_total", rule="order_total > 0") == before_total + 2
    assert metric(governed, "meshgate_policy_rejections_total", rule="customer_id is not null") == before_cust + 2
    log = governed.log_text()
    assert "breaks contract `shop-orders` rule `order_total > 0`" in log
    assert "breaks contract `shop-orders` rule `customer_id is not null`" in log

    got = [v for v in consume(governed.bootstrap, ["shop.orders.v1"], expected=20) if run.encode() in v]
    assert sorted(got) == sorted(valid), "valid records exactly once, rejected ones absent"


def test_shadow_forwards_everything_and_counts_exactly_what_enforce_refuses(governed):
    """The same records to a shadowed contract and to its enforced twin: the twin refuses some;
    the shadow forwards all of them, each once, and counts per rule exactly the twin's refusals."""
    run = uuid.uuid4().hex[:8]
    values = ([order(run, i, total=5 + i) for i in range(6)]
              + [order(run, 10, total=0), order(run, 11, total=-2.5), order(run, 12, total=-1)]
              + [order(run, 13, drop_customer=True), order(run, 14, customer=None)]
              + [order(run, 15, total=-3, drop_customer=True)])
    rules = ["order_total > 0", "customer_id is not null"]

    def refused(topic):
        return {r: metric(governed, "meshgate_policy_rejections_total", topic=topic, rule=r) for r in rules}

    def would(topic):
        return {r: metric(governed, "meshgate_policy_would_reject_total", topic=topic, rule=r,
                          policy="contract", mode="shadow") for r in rules}

    twin_before, shadow_before = refused("shop.twin.v1"), would("shop.shadow.v1")
    twin = produce_each(governed.bootstrap, "shop.twin.v1", values, partition=0)
    shadow = produce_each(governed.bootstrap, "shop.shadow.v1", values, partition=0)

    assert [e is None for e in twin] == [True] * 6 + [False] * 6
    assert shadow == [None] * len(values), "shadow forwards every record"
    twin_counts = {r: refused("shop.twin.v1")[r] - twin_before[r] for r in rules}
    shadow_counts = {r: would("shop.shadow.v1")[r] - shadow_before[r] for r in rules}
    # Each shadowed rule counts the partitions it alone would refuse; the twin counts each
    # refused partition once, under the first rule it broke: the last record breaks both.
    assert twin_counts == {"order_total > 0": 4, "customer_id is not null": 2}
    assert shadow_counts == {"order_total > 0": 4, "customer_id is not null": 3}
    assert refused("shop.shadow.v1") == {r: 0 for r in rules}, "no real refusal in shadow"

    got = [v for v in consume(governed.bootstrap, ["shop.shadow.v1"], expected=len(values)) if run.encode() in v]
    assert sorted(got) == sorted(values), "every record exactly once"
    assert "would reject (forwarded): breaks contract `shop-shadow` rule `order_total > 0`" in governed.log_text()

    # The catalog shows the rules' modes and that they are not quiet.
    status, body = governed.admin("/catalog")
    assert status == 200
    rows = {(r["contract"], r["rule"]): r for r in json.loads(body)["rules"]}
    row = rows[("shop-shadow", "order_total > 0")]
    assert row["mode"] == "shadow" and row["zero_would_rejects"] is False
    assert row["would_reject_total"] == shadow_counts["order_total > 0"] + shadow_before["order_total > 0"]
    assert rows[("shop-enforced-twin", "order_total > 0")]["mode"] == "enforce"


def test_a_reload_from_shadow_to_enforce_applies_under_live_traffic(governed):
    """A producer keeps sending a valid and an invalid record while the rule's mode changes from
    shadow to enforce: valid records are never refused, and invalid ones switch from forwarded to
    refused exactly once, without a restart."""
    import threading
    run = uuid.uuid4().hex[:8]
    mode_file = governed.policies / "contracts" / "mode.yaml"
    stop = threading.Event()
    outcomes = []  # (valid verdict, invalid verdict) per round, in order

    def traffic():
        p = Producer({"bootstrap.servers": governed.bootstrap, "acks": "all",
                      "enable.idempotence": False, "linger.ms": 0})
        i = 0
        while not stop.is_set():
            box = {}
            p.produce("shop.mode.v1", value=order(run, i, total=5), partition=0,
                      on_delivery=lambda err, msg: box.__setitem__("valid", err))
            p.flush(15)
            p.produce("shop.mode.v1", value=order(run, i + 1, total=-5), partition=0,
                      on_delivery=lambda err, msg: box.__setitem__("invalid", err))
            p.flush(15)
            outcomes.append((box.get("valid", "undelivered"), box.get("invalid", "undelivered")))
            i += 2

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for(lambda: len(outcomes) >= 5, what="traffic in shadow")
        generation = metric(governed, "meshgate_policy_generation")
        mode_file.write_text(MODE_CONTRACT.format(mode="enforce"))
        wait_for(lambda: metric(governed, "meshgate_policy_generation") > generation, what="reload")
        seen = len(outcomes)
        wait_for(lambda: len(outcomes) >= seen + 5, what="traffic after the reload")
    finally:
        stop.set()
        thread.join(30)
    assert all(v is None for v, _ in outcomes), "valid records are never refused"
    forwarded = [inv is None for _, inv in outcomes]
    assert forwarded[0] is True, "shadow forwarded the invalid record"
    switch = forwarded.index(False)
    assert all(forwarded[:switch]) and not any(forwarded[switch:]), forwarded
    refused = [inv for _, inv in outcomes[switch:]]
    assert all(isinstance(e, KafkaError) and e.code() == KafkaError.INVALID_RECORD for e in refused)
    # On the topic: every valid record and only the forwarded invalid ones, each once.
    expected = 2 * len(outcomes) - len(refused)
    got = [v for v in consume(governed.bootstrap, ["shop.mode.v1"], expected=expected) if run.encode() in v]
    assert len(got) == expected and len(set(got)) == expected
    mode_file.write_text(MODE_CONTRACT.format(mode="shadow"))


def test_kafka_python_sees_invalid_record_with_the_rule_in_its_message(governed):
    run = uuid.uuid4().hex[:8]
    p = KafkaProducer(bootstrap_servers=governed.bootstrap, acks="all", enable_idempotence=False)

    def send(v):
        f = p.send("shop.orders-py.v1", value=v)
        p.flush()
        try:
            f.get(timeout=10)
            return None
        except Exception as e:  # kafka.errors.InvalidRecordError
            return e

    valid = [order(run, i) for i in range(10)]
    assert [send(v) for v in valid] == [None] * 10
    e = send(order(run, 50, total=0))
    assert type(e).__name__ == "InvalidRecordError" and "order_total > 0" in str(e), e
    e = send(order(run, 51, customer=None))
    assert type(e).__name__ == "InvalidRecordError" and "customer_id is not null" in str(e), e
    e = send(b"not json")
    assert type(e).__name__ == "InvalidRecordError" and "not JSON" in str(e), e
    p.close()
    got = [v for v in consume(governed.bootstrap, ["shop.orders-py.v1"], expected=10) if run.encode() in v]
    assert sorted(got) == sorted(valid)


def test_one_request_two_partitions_valid_lands_invalid_is_rejected(governed):
    """kafka-python puts every ready batch for a broker into one Produce request (librdkafka 2.16
    sends one request per partition), so it carries both partitions here."""
    run = uuid.uuid4().hex[:8]
    good, bad = order(run, 0), order(run, 1, total=0)
    p = KafkaProducer(bootstrap_servers=governed.bootstrap, acks="all", linger_ms=300)
    p.partitions_for("shop.split.v1")  # metadata first, so both batches are ready together
    produces_before = metric(governed, "meshgate_requests_total", api="Produce")
    f_good = p.send("shop.split.v1", value=good, partition=0)
    f_bad = p.send("shop.split.v1", value=bad, partition=1)
    p.flush()
    assert metric(governed, "meshgate_requests_total", api="Produce") == produces_before + 1, "one request"
    assert f_good.get(timeout=10).partition == 0
    with pytest.raises(Exception) as e:
        f_bad.get(timeout=10)
    assert type(e.value).__name__ == "InvalidRecordError" and "order_total > 0" in str(e.value)
    p.close()

    got = [v for v in consume(governed.bootstrap, ["shop.split.v1"], expected=1) if run.encode() in v]
    assert got == [good]


def test_idempotent_producers_after_a_rejection(governed):
    """What each client does after meshgate rejects one of its idempotent batches.

    The broker never sees the rejected batch, so the client's next sequence number leaves a gap.
    - librdkafka detects the gap and bumps its producer epoch locally (KIP-360). Apache Kafka
      accepts the bumped epoch, so the same producer carries on (tansu 0.6.0 answers
      PRODUCER_FENCED instead: see test_tansu.py). A new producer instance works too.
    - kafka-python fails every later send of that producer with the original rejection.
    In no case does a record that failed delivery appear in the topic."""
    run = uuid.uuid4().hex[:8]
    topic = "shop.idem.v1"
    p = Producer({"bootstrap.servers": governed.bootstrap, "acks": "all", "enable.idempotence": True})
    out = []
    for v in [order(run, 0), order(run, 1, total=0), order(run, 2), order(run, 3)]:
        box = []
        p.produce(topic, value=v, partition=0, on_delivery=lambda e, m: box.append(e))
        p.flush(15)
        out.append(box[0])
    assert out[0] is None
    assert out[1].code() == KafkaError.INVALID_RECORD
    assert out[2:] == [None, None], out

    fresh = Producer({"bootstrap.servers": governed.bootstrap, "acks": "all", "enable.idempotence": True})
    box = []
    fresh.produce(topic, value=order(run, 4), partition=0, on_delivery=lambda e, m: box.append(e))
    fresh.flush(15)
    assert box == [None], "a new idempotent producer works"

    kp = KafkaProducer(bootstrap_servers=governed.bootstrap, acks="all", enable_idempotence=True)
    kerrs = []
    for v in [order(run, 10, total=0), order(run, 11), order(run, 12)]:
        f = kp.send(topic, value=v, partition=1)
        kp.flush()
        try:
            f.get(timeout=10)
            kerrs.append(None)
        except Exception as e:
            kerrs.append(type(e).__name__)
    kp.close()
    assert kerrs[0] == "InvalidRecordError"
    assert all(k is not None for k in kerrs[1:]), kerrs

    delivered = [0, 2, 3, 4]
    got = sorted(v for v in consume(governed.bootstrap, [topic], expected=len(delivered))
                 if run.encode() in v)
    assert got == sorted(order(run, i) for i in delivered), \
        "only records reported delivered are present, each once"


def test_create_topics_is_judged_per_topic(governed):
    admin = AdminClient({"bootstrap.servers": governed.bootstrap})

    def outcome(topics, validate_only=False):
        futures = admin.create_topics(topics, validate_only=validate_only)
        out = {}
        for name, f in futures.items():
            try:
                f.result(15)
                out[name] = None
            except KafkaException as e:
                out[name] = e.args[0]
        return out

    good = "orders.order-events.v1"
    # Policy checks come before the broker's: these contract topics exist already, yet the answer
    # is the policy's.
    res = outcome([NewTopic("Bad_Name", 3, 1), NewTopic("shop.orders.v1", 1, 1), NewTopic("shop.nocontract.v1", 3, 1),
                   NewTopic("shop.split.v1", 3, 1, config={"retention.ms": "99999999999"})])
    assert res["Bad_Name"].name() == "POLICY_VIOLATION" and "naming rule" in res["Bad_Name"].str()
    assert res["shop.orders.v1"].name() == "POLICY_VIOLATION"
    assert "1 partitions, but the topic rules" in res["shop.orders.v1"].str()
    assert res["shop.nocontract.v1"].name() == "POLICY_VIOLATION"
    assert "no data contract" in res["shop.nocontract.v1"].str()
    assert "retention.ms=99999999999 must be at most" in res["shop.split.v1"].str()

    # A good topic in the same request as a bad one is still created.
    existing = set(admin.list_topics(timeout=10).topics)
    if good in existing:
        admin.delete_topics([good])[good].result(15)
    res = outcome([NewTopic("Also_Bad", 3, 1), NewTopic(good, 3, 1)])
    assert res["Also_Bad"].name() == "POLICY_VIOLATION"
    assert res[good] is None
    topics = admin.list_topics(timeout=10).topics
    assert good in topics and "Also_Bad" not in topics and "Bad_Name" not in topics


def test_create_topics_checks_configs_and_honours_validate_only(governed):
    admin = AdminClient({"bootstrap.servers": governed.bootstrap})
    topic = "orders.order-events.v1"
    if topic in admin.list_topics(timeout=10).topics:
        admin.delete_topics([topic])[topic].result(15)
        wait_for(lambda: topic not in admin.list_topics(timeout=5).topics, what="deleted")
    f = admin.create_topics([NewTopic(topic, 3, 1, config={"cleanup.policy": "compact,delete",
                                                           "retention.ms": "99999999999"})])[topic]
    with pytest.raises(KafkaException) as e:
        f.result(15)
    assert "retention.ms" in e.value.args[0].str()
    f = admin.create_topics([NewTopic(topic, 3, 1, config={"cleanup.policy": "archive"})])[topic]
    with pytest.raises(KafkaException) as e:
        f.result(15)
    assert "cleanup.policy" in e.value.args[0].str()
    # validate_only requests are judged like any other. (The flag itself is forwarded untouched;
    # tansu 0.6.0 ignores it even when called directly, so a passing topic is not checked here.)
    f = admin.create_topics([NewTopic(topic, 1, 1)], validate_only=True)[topic]
    with pytest.raises(KafkaException) as e:
        f.result(15)
    assert e.value.args[0].name() == "POLICY_VIOLATION"
    assert topic not in admin.list_topics(timeout=10).topics


def test_hot_reload_tightens_rules_and_a_broken_file_keeps_the_last_good_set(governed):
    run = uuid.uuid4().hex[:8]
    topic = "shop.reload.v1"
    reload_file = governed.policies / "contracts" / "reload.yaml"
    broken_file = governed.policies / "contracts" / "zz-broken.yaml"

    def verdicts():
        errs = produce_each(governed.bootstrap, topic, [order(run, 1, total=50), order(run, 2, total=150)])
        return [e is None for e in errs]

    assert verdicts() == [True, True]
    generation = metric(governed, "meshgate_policy_generation")
    reload_file.write_text(RELOAD_CONTRACT.format(minimum=100))
    wait_for(lambda: metric(governed, "meshgate_policy_generation") > generation, what="reload")
    assert verdicts() == [False, True], "the tightened rule applies without a restart"

    errors_before = metric(governed, "meshgate_policy_reloads_total", outcome="error")
    generation = metric(governed, "meshgate_policy_generation")
    broken_file.write_text("contract:\n  name: [unterminated\n")
    wait_for(lambda: metric(governed, "meshgate_policy_reloads_total", outcome="error") > errors_before,
             what="failed reload")
    assert metric(governed, "meshgate_policy_generation") == generation
    assert verdicts() == [False, True], "the last good set stays in force"
    assert "zz-broken.yaml:2" in governed.log_text()

    broken_file.unlink()
    reload_file.write_text(RELOAD_CONTRACT.format(minimum=0))
    wait_for(lambda: metric(governed, "meshgate_policy_generation") > generation, what="recovery")
    assert verdicts() == [True, True]

    # SIGHUP forces a reload even with nothing changed.
    generation = metric(governed, "meshgate_policy_generation")
    governed.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: metric(governed, "meshgate_policy_generation") == generation + 1, what="SIGHUP reload")
    assert governed.proc.poll() is None, "SIGHUP does not stop the gateway"


def test_check_reports_file_and_line_and_exit_codes(tmp_path):
    binary = ROOT / "target" / "debug" / "meshgate"
    ok = subprocess.run([binary, "check", ROOT / "policies"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (tmp_path / "naming.yaml").write_text("naming:\n  topics:\n    pattern: '^[a-z.]+$'\n")
    (tmp_path / "c.yaml").write_text(
        "contract:\n  name: c\n  owner: o\n  topic: Bad_Topic\n"
        "---\ncontract:\n  name: d\n  owner: o\n  topic: good.topic\n  quality:\n    validity_rules:\n"
        "      - amount >\n")
    (tmp_path / "p.yaml").write_text("produce:\n  - topics: '^x'\n    compresion: [lz4]\n")
    bad = subprocess.run([binary, "check", tmp_path], capture_output=True, text=True)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert any(l.startswith(f"{tmp_path}/c.yaml:4:") and "naming pattern" in l for l in lines), lines
    assert any(l.startswith(f"{tmp_path}/c.yaml:12:") and "does not parse" in l for l in lines), lines
    assert any(l.startswith(f"{tmp_path}/p.yaml:3:") and "compresion" in l for l in lines), lines

    missing = subprocess.run([binary, "check", tmp_path / "nope"], capture_output=True, text=True)
    assert missing.returncode == 2


def test_meshgate_test_runs_the_example_cases_and_reports_a_wrong_one_in_junit(tmp_path):
    """`meshgate test`: the repository's example cases pass; a deliberately wrong expectation
    fails with what was expected and what came, in the summary and in a JUnit report; and
    `--against` lists the verdicts a policy change flips."""
    import xml.etree.ElementTree as ET
    binary = ROOT / "target" / "debug" / "meshgate"
    ok = subprocess.run([binary, "test", ROOT / "policies"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("passed, 0 failed"), ok.stdout

    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "tests" / "wrong.yaml").write_text(
        "cases:\n"
        "  - name: a negative total is accepted (wrong on purpose)\n"
        "    produce:\n"
        "      topic: orders.order-events.v1\n"
        "      key: o-1\n"
        "      value: {order_id: o-1, customer_id: c-1, order_total: -5}\n"
        "      headers: {trace-id: t}\n"
        "    expect: accept\n")
    junit = tmp_path / "junit.xml"
    bad = subprocess.run([binary, "test", policies, "--junit", junit], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert (f"FAIL {policies}/tests/wrong.yaml:2: a negative total is accepted (wrong on purpose)\n"
            "  expected: accept\n"
            "  got:      reject `order_total > 0` (policy contract)") in bad.stdout, bad.stdout
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "1"
    failed = [tc for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["a negative total is accepted (wrong on purpose)"]
    assert int(root.get("tests")) == len(list(root.iter("testcase")))

    # Relaxing the rule flips exactly the cases that depended on it.
    (policies / "tests" / "wrong.yaml").unlink()
    relaxed = tmp_path / "relaxed"
    shutil.copytree(ROOT / "policies", relaxed)
    contract = relaxed / "contracts" / "order-events-v1.yaml"
    contract.write_text(contract.read_text().replace("      - order_total > 0\n", ""))
    diff = subprocess.run([binary, "test", relaxed, "--cases", policies / "tests", "--against", policies],
                          capture_output=True, text=True)
    assert diff.returncode == 1, diff.stdout
    assert diff.stdout.count("CHANGED ") == 1, diff.stdout
    assert "a zero total breaks the contract\n  old set: reject `order_total > 0`" in diff.stdout, diff.stdout


def test_replay_dry_run_counts_a_known_mix_by_rule(broker, tmp_path):
    """`meshgate replay --dry-run` reads the topic straight from Kafka and judges every record
    under a new policy set: its counts by rule match the mix that was produced, and it writes
    nothing."""
    run = uuid.uuid4().hex[:8]
    topic = f"e2e.replay{run}.v1"
    create_topic(broker.bootstrap, topic, partitions=3)
    values = ([order(run, i, total=1 + i) for i in range(20)]
              + [order(run, 100 + i, total=-i) for i in range(7)]
              + [order(run, 200 + i, drop_customer=True) for i in range(4)])
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % 3)
    assert p.flush(30) == 0
    policies = tmp_path / "new-policies"
    (policies / "schemas").mkdir(parents=True)
    shutil.copy(ROOT / "policies" / "contracts" / "schemas" / "order-events-v1.avsc", policies / "schemas")
    (policies / "c.yaml").write_text(
        f"contract:\n  name: replayed\n  owner: o\n  topic: {topic}\n"
        "  schema: { format: json, file: schemas/order-events-v1.avsc }\n"
        "  quality:\n    validity_rules: [order_total > 0, customer_id is not null]\n")
    binary = ROOT / "target" / "debug" / "meshgate"
    cmd = [binary, "replay", "--dry-run", "--from", topic, "--policies", policies,
           "--bootstrap", broker.bootstrap]
    out = subprocess.run([*cmd, "--last", str(len(values)), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert (result["records"], result["accepted"], result["rejected"]) == (31, 20, 11), result
    counts = {r["rule"]: r["records"] for r in result["by_rule"]}
    assert counts == {"order_total > 0": 7, "customer_id is not null": 4}, counts
    example = result["by_rule"][0]["examples"][0]
    assert "breaks contract `replayed` rule `order_total > 0`" in example[2]
    assert run not in example[2], "examples carry no record values"

    # --last is split over the partitions: 3 reads the newest record of each.
    last = subprocess.run([*cmd, "--last", "3", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(last.stdout)["records"] == 3, last.stdout
    text = subprocess.run([*cmd, "--last", "31"], capture_output=True, text=True, timeout=60).stdout
    assert "would reject: 11\n  order_total > 0 (contract): 7\n" in text, text

    # Nothing was written: the topic still holds exactly what was produced.
    got = [v for v in consume(broker.bootstrap, [topic], expected=len(values))]
    assert sorted(got) == sorted(values)
    assert subprocess.run([binary, "replay", "--from", topic, "--policies", policies],
                          capture_output=True, text=True).returncode == 2, "one of --dry-run and --to"
