"""ODCS contracts end to end, against Apache Kafka with real clients: a policy directory holding
an ODCS v3.1.0 document (no meshgate `contract:` keys at all) is enforced on the wire.

- its per-record quality rules refuse exactly the records that break them (librdkafka and
  kafka-python): each refused record is absent from the topic, read directly from the broker, and
  each accepted one is present exactly once;
- its window rules (a null-percentage, duplicate values, a row count) refuse nothing and appear as
  SLIs: counted in /metrics, listed with their targets on /catalog, and alerted on by
  `meshgate alerts`;
- /catalog shows the document's ODCS identity and what it declares but does not enforce.
"""

import json
import subprocess
import time
import uuid

from confluent_kafka import KafkaError, Producer
from kafka import KafkaProducer
from kafka.errors import KafkaError as PyKafkaError
from prometheus_client.parser import text_string_to_metric_families

from clients import consume, create_topic
from conftest import ROOT, start_gateway

ODCS = """
apiVersion: v3.1.0
kind: DataContract
id: payments-{run}
name: payments-{run}
version: 1.0.0
status: active
domain: payments
team: {{name: payments}}
servers:
  - server: local
    type: kafka
    host: localhost:9092
    format: json
    customProperties:
      - {{property: topic, value: "{topic}"}}
schema:
  - name: Payment
    physicalType: topic
    properties:
      - name: payment_id
        logicalType: string
        required: true
        logicalTypeOptions: {{pattern: '^p-[0-9]+$'}}
      - name: amount
        logicalType: number
        required: true
        quality:
          - type: sql
            query: SELECT COUNT(*) FROM {{object}} WHERE {{property}} <= 0
            mustBe: 0
      - name: currency
        logicalType: string
        quality:
          - {{metric: invalidValues, arguments: {{validValues: [EUR, USD]}}, mustBe: 0}}
          - {{metric: nullValues, mustBe: 0}}
      - name: method
        logicalType: string
        quality:
          - {{id: method_known, metric: nullValues, mustBeLessThan: 10, unit: percent}}
    quality:
      - {{id: unique_payments, metric: duplicateValues, arguments: {{properties: [payment_id]}}, mustBe: 0}}
      - {{id: hourly_volume, metric: rowCount, mustBeGreaterThan: 1000}}
      - {{type: text, description: Payments are in minor units.}}
"""

GOOD = [
    {"payment_id": "p-1", "amount": 10.5, "currency": "EUR", "method": "card"},
    {"payment_id": "p-2", "amount": 3, "currency": "USD", "method": None},
    {"payment_id": "p-3", "amount": 7, "currency": "EUR", "method": "transfer"},
    {"payment_id": "p-1", "amount": 1, "currency": "USD", "method": "card"},
]
BAD = {
    "pattern": {"payment_id": "x-9", "amount": 1, "currency": "EUR"},
    "sql": {"payment_id": "p-8", "amount": 0, "currency": "EUR"},
    "invalid": {"payment_id": "p-7", "amount": 2, "currency": "GBP"},
    "null": {"payment_id": "p-6", "amount": 2, "currency": None},
    "schema": {"payment_id": "p-5", "currency": "EUR"},
}


def metric(gw, name, **labels):
    for fam in text_string_to_metric_families(gw.metrics()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_odcs_quality_rules_refuse_the_right_records_and_window_rules_are_slis(
        broker, logdir, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic = f"odcs.pay{run}.v1"
    name = f"payments-{run}"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "payments.odcs.yaml").write_text(ODCS.format(run=run, topic=topic))
    create_topic(broker.bootstrap, topic, partitions=1)
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    try:
        # librdkafka: each record in its own request, so that each gets its own verdict.
        outcome = {}
        for label, value in [(f"good{i}", v) for i, v in enumerate(GOOD)] + list(BAD.items()):
            p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "linger.ms": 0})
            p.produce(topic, value=json.dumps(value),
                      on_delivery=lambda err, msg, label=label: outcome.__setitem__(label, err))
            assert p.flush(30) == 0
        for i in range(len(GOOD)):
            assert outcome[f"good{i}"] is None, outcome
        for label in BAD:
            err = outcome[label]
            assert err is not None and err.code() == KafkaError.INVALID_RECORD, (label, err)

        # kafka-python: one accepted, one refused by the ODCS invalidValues rule.
        kp = KafkaProducer(bootstrap_servers=gw.bootstrap, acks="all", linger_ms=0)
        kp.send(topic, json.dumps({"payment_id": "p-40", "amount": 4, "currency": "USD",
                                   "method": "card"}).encode()).get(timeout=30)
        refused = kp.send(topic, json.dumps({"payment_id": "p-41", "amount": 4,
                                             "currency": "JPY"}).encode())
        try:
            refused.get(timeout=30)
            raise AssertionError("JPY is not a valid value")
        except PyKafkaError as e:
            # kafka-python shows the broker's message: the ODCS rule meshgate compiled.
            assert type(e).__name__ == "InvalidRecordError", e
            assert "currency IS NULL OR currency IN ('EUR', 'USD')" in str(e), e
        kp.close()

        # On the topic, read from the broker directly: every accepted record once, no refused one.
        values = [json.loads(v) for v in consume(broker.bootstrap, [topic], expected=5)]
        expected = GOOD + [{"payment_id": "p-40", "amount": 4, "currency": "USD",
                            "method": "card"}]
        assert sorted(map(json.dumps, values)) == sorted(map(json.dumps, expected))

        # Window rules are SLIs: counted, never refusing. 5 accepted records were judged: one
        # null method (20% against < 10%), one repeated payment_id.
        labels = {"contract": name}
        assert metric(gw, "meshgate_contract_sli_records_total", sli="method_known",
                      outcome="bad", **labels) == 1
        assert metric(gw, "meshgate_contract_sli_records_total", sli="method_known",
                      outcome="good", **labels) == 4
        assert metric(gw, "meshgate_contract_sli_records_total", sli="unique_payments",
                      outcome="bad", **labels) == 1
        assert metric(gw, "meshgate_contract_sli_value", sli="method_known", **labels) == 20
        assert metric(gw, "meshgate_contract_sli_met", sli="method_known", **labels) == 0
        assert metric(gw, "meshgate_contract_sli_target", sli="hourly_volume", op=">",
                      metric="rowCount", **labels) == 1000

        # /catalog: the ODCS identity, the SLIs with their targets, what is not enforced.
        status, body = gw.admin("/catalog")
        assert status == 200
        product = next(p for p in json.loads(body)["data_products"] if p["name"] == name)
        assert product["odcs"]["id"] == name and product["odcs"]["status"] == "active"
        slis = {s["id"]: s for s in product["slis"]}
        assert set(slis) == {"method_known", "unique_payments", "hourly_volume"}
        assert slis["method_known"]["target"] == "< 10 percent"
        assert slis["method_known"]["met"] is False
        assert slis["unique_payments"]["bad"] == 1
        assert any("read by people" in n["reason"] for n in product["odcs"]["not_enforced"])
        status, page = gw.admin("/catalog?format=html")
        assert status == 200 and "Declared, not enforced" in page and "method_known" in page

        # `meshgate alerts` has one alert per SLI.
        binary = gw.proc.args[0]
        alerts = subprocess.run([binary, "alerts", str(policies)], capture_output=True,
                                text=True, check=True).stdout
        assert alerts.count("alert: DataProductSliBreached") == 3, alerts
    finally:
        assert gw.stop() == 0
