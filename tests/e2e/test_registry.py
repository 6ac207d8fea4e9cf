"""The built-in schema registry: Confluent's own client and serializer, pointed at meshgate."""

import json
import struct
import uuid

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka import KafkaError, Producer
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka import KafkaProducer

from clients import consume, create_topic
from conftest import start_gateway

V1 = {"type": "record", "name": "Payment", "namespace": "pay",
      "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "double"}]}
V2 = {"type": "record", "name": "Payment", "namespace": "pay",
      "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "double"},
                 {"name": "currency", "type": "string", "default": "EUR"}]}
CONTRACT = """
contract:
  name: payments
  owner: payments-team
  topic: pay.payments.v1
  schema:
    format: avro
    version: 1.1.0
    compatibility: backward
    file: payment-v2.avsc
    history: [payment-v1.avsc]
  quality:
    validity_rules:
      - amount > 0
      - currency IN ('EUR', 'USD')
"""


@pytest.fixture(scope="module")
def registry_gateways(broker, logdir, tmp_path_factory):
    policies = tmp_path_factory.mktemp("registry-policies")
    (policies / "payment-v1.avsc").write_text(json.dumps(V1))
    (policies / "payment-v2.avsc").write_text(json.dumps(V2, indent=2))
    (policies / "payments.yaml").write_text(CONTRACT)
    first = start_gateway(broker.bootstrap, logdir, policies=policies)
    second = start_gateway(broker.bootstrap, logdir, policies=policies)
    yield first, second
    assert first.stop() == 0 and second.stop() == 0


def client(gw):
    return SchemaRegistryClient({"url": f"http://127.0.0.1:{gw.admin_port}/registry"})


def test_subjects_versions_and_ids_through_confluents_client(registry_gateways):
    gw, other = registry_gateways
    sr = client(gw)
    subject = "pay.payments.v1-value"
    assert sr.get_subjects() == [subject]
    assert sr.get_versions(subject) == [1, 2]
    latest = sr.get_latest_version(subject)
    assert latest.version == 2
    assert json.loads(latest.schema.schema_str) == V2
    v1 = sr.get_version(subject, 1)
    assert json.loads(v1.schema.schema_str) == V1
    assert v1.schema_id != latest.schema_id
    assert json.loads(sr.get_schema(latest.schema_id).schema_str) == V2
    # Lookup by schema text (whitespace and key order do not matter).
    found = sr.lookup_schema(subject, Schema(json.dumps(V1, indent=4), "AVRO"))
    assert (found.version, found.schema_id) == (1, v1.schema_id)
    with pytest.raises(SchemaRegistryError) as e:
        sr.lookup_schema(subject, Schema(json.dumps({"type": "string"}), "AVRO"))
    assert e.value.http_status_code == 404
    with pytest.raises(SchemaRegistryError) as e:
        sr.get_latest_version("nope-value")
    assert e.value.error_code == 40401
    assert sr.get_compatibility(subject) == "BACKWARD"

    # Ids do not depend on the instance: a second gateway serves the same ones.
    twin = client(other).get_latest_version(subject)
    assert (twin.schema_id, twin.version) == (latest.schema_id, 2)


def test_avro_serializer_with_use_latest_version_frames_records_with_the_registry_id(registry_gateways):
    gw, _ = registry_gateways
    sr = client(gw)
    serializer = AvroSerializer(sr, conf={"auto.register.schemas": False, "use.latest.version": True})
    ctx = SerializationContext("pay.payments.v1", MessageField.VALUE)
    framed = serializer({"id": f"p-{uuid.uuid4().hex[:6]}", "amount": 12.5, "currency": "USD"}, ctx)
    magic, schema_id = struct.unpack(">bI", framed[:5])
    assert magic == 0
    assert schema_id == sr.get_latest_version("pay.payments.v1-value").schema_id


def test_avro_records_are_decoded_and_judged_through_the_contract(registry_gateways, broker):
    gw, _ = registry_gateways
    create_topic(broker.bootstrap, "pay.payments.v1", partitions=1)
    sr = client(gw)
    serializer = AvroSerializer(sr, conf={"auto.register.schemas": False, "use.latest.version": True})
    ctx = SerializationContext("pay.payments.v1", MessageField.VALUE)
    run = uuid.uuid4().hex[:8]
    valid = [{"id": f"{run}-{i}", "amount": 10.0 + i, "currency": "EUR"} for i in range(5)]
    invalid = [{"id": f"{run}-bad-amount", "amount": 0.0, "currency": "EUR"},
               {"id": f"{run}-bad-currency", "amount": 3.0, "currency": "GBP"}]
    p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": False})
    results = []
    for record in valid + invalid:
        p.produce("pay.payments.v1", value=serializer(record, ctx), on_delivery=lambda e, m: results.append(e))
        p.flush(15)
    assert results[:5] == [None] * 5
    assert [e.code() for e in results[5:]] == [KafkaError.INVALID_RECORD] * 2

    # Raw bytes and an unknown schema id are refused, each saying which.
    kp = KafkaProducer(bootstrap_servers=gw.bootstrap, acks="all", enable_idempotence=False)

    def send(value):
        f = kp.send("pay.payments.v1", value=value)
        kp.flush()
        try:
            f.get(timeout=10)
            return None
        except Exception as e:
            return str(e)

    raw = send(json.dumps(valid[0]).encode())
    assert raw and "not in Confluent wire format" in raw, raw
    unknown = send(b"\x00" + struct.pack(">I", 999_999) + b"\x02x")
    assert unknown and "schema id 999999 is unknown" in unknown, unknown
    kp.close()

    deserializer = AvroDeserializer(sr)
    got = [deserializer(v, ctx) for v in consume(gw.bootstrap, ["pay.payments.v1"], expected=5)]
    got = [r for r in got if r["id"].startswith(run)]
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in valid), "valid once, invalid absent"


def test_external_registry_decides_writer_schemas_and_failing_it_is_retriable(broker, logdir, tmp_path):
    """A second meshgate's built-in registry plays the external registry (no Confluent registry can
    be installed here); its subject holds a compatible v1 and an incompatible v2 (amount: string)."""
    incompatible = {"type": "record", "name": "Payment", "namespace": "pay",
                    "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "string"}]}
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "v1.avsc").write_text(json.dumps(V1))
    (remote / "v2.avsc").write_text(json.dumps(incompatible))
    (remote / "c.yaml").write_text(
        "contract:\n  name: ext\n  owner: o\n  topic: pay.ext.v1\n"
        "  schema: { format: avro, compatibility: none, file: v2.avsc, history: [v1.avsc] }\n")
    local = tmp_path / "local"
    local.mkdir()
    (local / "reader.avsc").write_text(json.dumps(V2))
    (local / "c.yaml").write_text(
        "contract:\n  name: ext\n  owner: o\n  topic: pay.ext.v1\n"
        "  schema: { format: avro, file: reader.avsc }\n  quality: { validity_rules: [amount > 0] }\n")
    registry_gw = start_gateway(broker.bootstrap, logdir, policies=remote)
    url = f"http://127.0.0.1:{registry_gw.admin_port}/registry"
    gw = start_gateway(broker.bootstrap, logdir, policies=local, extra_args=["--schema-registry", url])
    try:
        create_topic(broker.bootstrap, "pay.ext.v1", partitions=1)
        sr = SchemaRegistryClient({"url": url})
        ctx = SerializationContext("pay.ext.v1", MessageField.VALUE)
        compatible = AvroSerializer(sr, json.dumps(V1), conf={"auto.register.schemas": False})
        breaking = AvroSerializer(sr, conf={"auto.register.schemas": False, "use.latest.version": True})
        kp = KafkaProducer(bootstrap_servers=gw.bootstrap, acks="all", enable_idempotence=False, retries=0)

        def send(value):
            f = kp.send("pay.ext.v1", value=value)
            kp.flush()
            try:
                f.get(timeout=15)
                return None
            except Exception as e:
                return f"{type(e).__name__}: {e}"

        assert send(compatible({"id": "ok", "amount": 3.0}, ctx)) is None
        assert "amount > 0" in send(compatible({"id": "zero", "amount": 0.0}, ctx))
        refused = send(breaking({"id": "str", "amount": "3"}, ctx))
        assert refused and "cannot be read with the contract schema" in refused, refused

        # The registry goes away: an id meshgate has not cached fails retriably, never passes.
        assert registry_gw.stop() == 0
        down = send(b"\x00" + struct.pack(">I", 424242) + b"\x02x")
        assert down and down.startswith("RequestTimedOutError"), down
        # Ids already cached keep working.
        assert send(compatible({"id": "cached", "amount": 1.0}, ctx)) is None
        kp.close()
    finally:
        registry_gw.stop()
        assert gw.stop() == 0
