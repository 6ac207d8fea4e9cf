"""Observability: /metrics counts what happened, alert rules load in Prometheus, the catalog shows
the data products, and /readyz follows the upstream."""

import json
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from clients import consume, create_topic
from conftest import ROOT, start_gateway, start_kafka

OBS_CONTRACT = """
contract:
  name: obs-orders
  owner: observability-team
  topic: obs.orders.v1
  description: Orders, for the metrics test.
  schema: { format: json, version: 2.0.0, file: schemas/order-events-v1.avsc }
  sla: { availability: 99.5%, latency_p99: 500ms, freshness: 30s }
  quality:
    completeness: 95%
    validity_rules: [order_total > 0, customer_id is not null]
"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def observed(broker, logdir):
    policies = logdir / f"obs-policies-{uuid.uuid4().hex[:6]}"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "contracts" / "obs.yaml").write_text(OBS_CONTRACT)
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    create_topic(gw.bootstrap, "obs.orders.v1", partitions=3)
    yield gw
    assert gw.stop() == 0


def samples(gw):
    text = gw.metrics()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out, text


def value(all_samples, name, **labels):
    return all_samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_exactly_what_was_produced(observed, broker, tmp_path):
    run = uuid.uuid4().hex[:8]

    def order(i, total=10.0, customer="c"):
        return json.dumps({"order_id": f"{run}-{i}", "customer_id": customer, "order_total": total}).encode()

    # customer_id is nullable in the schema, so a null one is invalid (a rule) but complete; a
    # missing order_id is invalid (the schema) and incomplete.
    no_id = json.dumps({"customer_id": "c", "order_total": 5, "note": run}).encode()
    values = [order(i) for i in range(7)] + [order(10 + i, total=0) for i in range(3)] + \
             [order(20 + i, customer=None) for i in range(2)] + [no_id]
    p = Producer({"bootstrap.servers": observed.bootstrap, "acks": "all", "enable.idempotence": False})
    results = []
    for v in values:
        p.produce("obs.orders.v1", value=v, on_delivery=lambda e, m: results.append(e))
        p.flush(15)
    assert [e is None for e in results] == [True] * 7 + [False] * 6

    # A topic that breaks the naming convention, created behind the gateway's back.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    if "Bad_Topic" not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic("Bad_Topic", 1, 1)])["Bad_Topic"].result(15)
    p.produce("Bad_Topic", value=b"x", on_delivery=lambda e, m: results.append(e))
    p.flush(15)
    assert results[-1] is not None and results[-1].name() == "POLICY_VIOLATION"

    # Read the topic back: fetched record bytes are charged to the data product's topic.
    got = [v for v in consume(observed.bootstrap, ["obs.orders.v1"], expected=7) if run.encode() in v]
    assert sorted(got) == sorted(values[:7])

    s, text = samples(observed)
    topic = "obs.orders.v1"
    assert value(s, "meshgate_bytes_total", direction="out", topic=topic) >= sum(len(v) for v in values[:7])
    assert value(s, "meshgate_produce_records_total", topic=topic, outcome="accepted") == 7
    assert value(s, "meshgate_produce_records_total", topic=topic, outcome="rejected") == 6
    assert value(s, "meshgate_policy_rejections_total", topic=topic, policy="contract", rule="order_total > 0") == 3
    assert value(s, "meshgate_policy_rejections_total", topic=topic, policy="contract",
                 rule="customer_id is not null") == 2
    assert value(s, "meshgate_policy_rejections_total", topic=topic, policy="contract", rule="schema") == 1
    naming_rule = next(k for k in s if k[0] == "meshgate_policy_rejections_total" and ("policy", "naming") in k[1])
    assert dict(naming_rule[1])["topic"] == "_other", "client-chosen topic names never become labels"
    assert s[naming_rule] == 1
    assert value(s, "meshgate_contract_records_total", contract="obs-orders", result="valid") == 7
    assert value(s, "meshgate_contract_records_total", contract="obs-orders", result="invalid") == 6
    assert value(s, "meshgate_contract_validity_ratio", contract="obs-orders") == pytest.approx(7 / 13)
    assert value(s, "meshgate_contract_complete_records_total", contract="obs-orders") == 12
    assert value(s, "meshgate_contract_completeness_ratio", contract="obs-orders") == pytest.approx(12 / 13)
    assert value(s, "meshgate_contract_produce_requests_total", contract="obs-orders", outcome="ok") == 7
    assert value(s, "meshgate_contract_produce_latency_seconds_count", contract="obs-orders") == 7
    assert value(s, "meshgate_contract_availability_ratio", contract="obs-orders") == 1.0
    assert 0 <= value(s, "meshgate_contract_freshness_seconds", contract="obs-orders") < 60
    assert value(s, "meshgate_contract_sla_availability_target", contract="obs-orders") == 0.995
    assert value(s, "meshgate_contract_sla_latency_p99_seconds", contract="obs-orders") == 0.5
    assert value(s, "meshgate_contract_sla_freshness_seconds", contract="obs-orders") == 30
    assert value(s, "meshgate_contract_completeness_target", contract="obs-orders") == 0.95
    assert value(s, "meshgate_contract_info", contract="obs-orders", owner="observability-team",
                 topic=topic, version="2.0.0") == 1
    assert value(s, "meshgate_bytes_total", direction="in", topic=topic) >= sum(len(v) for v in values)
    assert value(s, "meshgate_bytes_total", direction="out", topic="_other") > 0
    assert value(s, "meshgate_requests_total", api="Produce") >= 14
    assert value(s, "meshgate_request_duration_seconds_count", api="Produce") >= 12
    assert value(s, "meshgate_connections_active") >= 1
    assert value(s, "meshgate_policy_generation") >= 1
    assert value(s, "meshgate_policy_reloads_total", outcome="ok") >= 1

    # Prometheus' own linter accepts the exposition.
    (tmp_path / "metrics.txt").write_text(text)
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_generated_alert_rules_load_in_prometheus(tmp_path):
    binary = ROOT / "target" / "debug" / "meshgate"
    out = subprocess.run([binary, "alerts", ROOT / "policies"], capture_output=True, text=True, check=True)
    rules = tmp_path / "alerts.yml"
    rules.write_text(out.stdout)
    check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 13 rules found" in check.stdout
    # The shipped file for docker-compose is the generated one.
    assert (ROOT / "deploy" / "alerts.yml").read_text() == out.stdout


def test_catalog_lists_data_products_as_json_and_as_a_page(observed, tmp_path):
    status, body = observed.admin("/catalog")
    assert status == 200
    products = {p["name"]: p for p in json.loads(body)["data_products"]}
    assert {"order-events-v1", "obs-orders"} <= set(products)
    seed = products["order-events-v1"]
    assert seed["owner"] == "orders-domain-team" and seed["topic"] == "orders.order-events.v1"
    assert seed["schema"]["format"] == "json" and seed["schema"]["version"] == "1.2.0"
    assert {"name": "order_total", "type": "number", "optional": False} in seed["schema"]["fields"]
    customer = next(f for f in seed["schema"]["fields"] if f["name"] == "customer_id")
    assert customer["classification"] == "pii", "the contract's schema section classifies it"
    assert seed["sla"] == {"availability": 0.999, "latency_p99_seconds": 1.0, "freshness_seconds": 60.0}
    assert seed["quality"]["validity_rules"] == ["order_total > 0", "customer_id is not null"]
    assert set(seed["live"]) == {"records_accepted", "records_rejected", "validity_ratio",
                                 "completeness_ratio", "availability_ratio", "freshness_seconds"}

    url = f"http://127.0.0.1:{observed.admin_port}/catalog?format=html"
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by .ci/run"
    profile = tmp_path / "chrome"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for text in ["order-events-v1", "orders-domain-team", "obs-orders", "observability-team",
                 "order_total &gt; 0"]:
        assert text in dom.stdout, text
    shot = tmp_path / "catalog.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1600",
                    f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, observed.log.parent / "catalog.png")


def test_readyz_follows_the_upstream(logdir, tmp_path):
    """With the default 30 s metadata refresh, /readyz still turns 503 within seconds of the
    cluster going away (the connect probe), and 200 again soon after it is back."""
    broker = start_kafka(logdir)
    gw = start_gateway(broker.bootstrap, logdir)
    try:
        assert gw.admin("/readyz")[0] == 200
        assert gw.admin("/healthz") == (200, "ok\n")
        broker.stop()
        # A generous bound: the probe runs every 2 s; the refresh alone would take up to 30 s.
        end = time.time() + 10
        while time.time() < end and gw.admin("/readyz")[0] == 200:
            time.sleep(0.2)
        status, body = gw.admin("/readyz")
        assert status == 503 and "upstream unreachable" in body, body
        assert gw.admin("/healthz")[0] == 200, "liveness does not depend on the upstream"

        broker.cluster.start_node(broker.cluster.nodes[0])
        end = time.time() + 30
        while time.time() < end and gw.admin("/readyz")[0] != 200:
            time.sleep(0.2)
        assert gw.admin("/readyz")[0] == 200
    finally:
        assert gw.stop() == 0
        broker.stop()
