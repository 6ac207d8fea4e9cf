"""Field-level protection end to end (`protect:` of a contract), against Apache Kafka with real
clients: meshgate seals the fields a contract classifies `pii` in accepted records, and shows
them per principal on the way out.

- On the topic (read from the broker directly, bypassing meshgate): every pii field is a
  `mg1:` envelope, every other field is as produced; an independent implementation of the
  documented envelope (pii_envelope.py, Python's `cryptography`) opens each one to the value
  produced. Every codec.
- Through meshgate: alice (in `pii_readers`) reads exactly what was produced, each record once;
  bob reads the mask. A record the contract refuses is nowhere.
- The Java client's transactional producer and read_committed consumer work through it.
- The key store unreachable: produce fails with a retriable error and nothing is written.
- A key file deleted (crypto-shredding): its fields read as the mask, for alice too.
- `require_encrypted`: plaintext refused, an envelope accepted.
- No produced pii value appears in meshgate's log, metrics, catalog or audit trail.
- Through a partner zone, by alias: the pii reader gets plaintext, another partner the mask.
- Answers over 256 KiB are shown as they stream; librdkafka and the Java client read them.
- An Avro contract: string fields sealed in place, the records still decoding with the schema
  they name (Confluent's AvroDeserializer, from the broker directly and through meshgate).
"""

import base64
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

import pii_envelope
from clients import create_topic
from conftest import ROOT, port_block, start_gateway, wait_for_port

CONTRACT = """
contract:
  name: {name}
  owner: privacy-team
  topic: {topic}
  schema:
    format: json
    definition: {{"type": "record", "name": "Order", "fields": [
      {{"name": "order_id", "type": "string"}},
      {{"name": "customer_id", "type": "string"}},
      {{"name": "email", "type": ["null", "string"], "default": null}},
      {{"name": "order_total", "type": "double"}}]}}
    classification: {{customer_id: pii, email: pii}}
  quality:
    validity_rules: ["order_total > 0"]
  protect: {{pii: encrypt}}
  pii_readers: [User:alice]
  mask_on_fetch: "***"
---
contract:
  name: {name}-sealed
  owner: privacy-team
  topic: {sealed}
  schema:
    format: json
    definition: {{"type": "record", "name": "S", "fields": [
      {{"name": "id", "type": "long"}}, {{"name": "email", "type": "string"}}]}}
    classification: {{email: pii}}
  protect: {{pii: require_encrypted}}
"""

AVRO_CONTRACT = """
contract:
  name: {name}
  owner: privacy-team
  topic: {topic}
  schema:
    format: avro
    definition: {{"type": "record", "name": "Order", "namespace": "shop", "fields": [
      {{"name": "order_id", "type": "string"}},
      {{"name": "customer_id", "type": "string", "classification": "pii"}},
      {{"name": "email", "type": ["null", "string"], "default": null, "classification": "pii"}},
      {{"name": "order_total", "type": "double"}}]}}
  quality:
    validity_rules: ["order_total > 0"]
  protect: {{pii: encrypt}}
  pii_readers: [User:alice]
  mask_on_fetch: "***"
"""

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def sasl(user):
    from kafka_cluster import USERS
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
            "sasl.username": user, "sasl.password": dict(USERS)[user]}


class Setup:
    def __init__(self, broker, logdir, root: Path, kms=None, key_cache_secs=1, zone=False,
                 avro=False):
        self.run = uuid.uuid4().hex[:8]
        self.topic, self.sealed = f"pii.t{self.run}.v1", f"pii.sealed{self.run}.v1"
        self.key_dir = root / "keys"
        self.kek = os.urandom(32)
        (root / "kek").write_text(base64.b64encode(self.kek).decode())
        policies = root / "policies"
        policies.mkdir()
        (policies / "pii.yaml").write_text(
            AVRO_CONTRACT.format(name=f"pii-{self.run}", topic=self.topic) if avro else
            CONTRACT.format(name=f"pii-{self.run}", topic=self.topic, sealed=self.sealed))
        self.zone = None
        if zone:
            # A partner zone sharing the protected topic under an alias, to alice and bob.
            port = port_block(10)
            (policies / "zone.yaml").write_text(
                f"zone:\n  name: z{self.run}\n  listen: 127.0.0.1:{port}\n"
                f"  principals: [User:alice, User:bob]\n"
                f"  shares:\n    - {{topic: {self.topic}, as: partner.pii}}\n")
            self.zone = f"127.0.0.1:{port}"
        kms = kms or f"{{local_file: {root / 'kek'}}}"
        config = self.config = root / "meshgate.yaml"
        self.audit = root / "audit.jsonl"
        config.write_text(f"protect:\n  key_dir: {self.key_dir}\n  kms: {kms}\n"
                          f"  key_cache_secs: {key_cache_secs}\n"
                          f"audit:\n  file: {self.audit}\n")
        # Two partitions: the Java driver's transactions write both.
        for t in (self.topic, self.sealed):
            create_topic(broker.bootstrap, t, partitions=2)
        sasl_addr = f"127.0.0.1:{broker.cluster.nodes[0].ports['SASL_PLAINTEXT']}"
        self.gw = start_gateway(sasl_addr, logdir, policies=policies,
                                extra_args=["--config", str(config)])
        if self.zone:
            wait_for_port(int(self.zone.rsplit(":", 1)[1]))
        self.broker = broker

    def produce(self, user, topic, values, codec="none", timeout_ms=30000, conf=None):
        """Delivery reports: (value, error or None), in order. `values`: text, or bytes."""
        p = Producer({"bootstrap.servers": self.gw.bootstrap, "enable.idempotence": True,
                      "compression.type": codec, "linger.ms": 20,
                      "message.timeout.ms": timeout_ms, **sasl(user), **(conf or {})})
        reports = []
        for v in values:
            raw = isinstance(v, bytes)
            p.produce(topic, value=v if raw else v.encode(), partition=0,
                      on_delivery=lambda err, m, raw=raw: reports.append(
                          (m.value() if raw else m.value().decode(), err)))
        p.flush(timeout_ms / 1000 + 15)
        return reports

    def read(self, topic, user=None, n=0, timeout=20, settle=2.0, bootstrap=None, decode=json.loads):
        """Every value of the topic: through meshgate as `user` (on `bootstrap` when given), or
        from the broker directly; each passed through `decode`."""
        conf = {"bootstrap.servers": bootstrap or (self.gw.bootstrap if user else
                                                    self.broker.bootstrap),
                "group.id": f"pii-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                "enable.auto.commit": False, **(sasl(user) if user else {})}
        c = Consumer(conf)
        c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        values, end, quiet_since = [], time.time() + timeout, None
        try:
            while time.time() < end:
                m = c.poll(0.3)
                if m is None:
                    if len(values) >= n and quiet_since and time.time() - quiet_since > settle:
                        break
                    quiet_since = quiet_since or time.time()
                    continue
                quiet_since = None
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                values.append(decode(m.value()))
        finally:
            c.close()
        return values

    def stop(self):
        assert self.gw.stop() == 0, self.gw.log_text()[-3000:]


def order(i, codec, total=10.0, email=True):
    v = {"order_id": f"{codec}-{i}", "customer_id": f"cust-{codec}-{i}-{uuid.uuid4().hex[:6]}",
         "order_total": total}
    if email:
        v["email"] = f"person{i}.{uuid.uuid4().hex[:6]}@example.org"
    return json.dumps(v)


@pytest.fixture
def setup(broker, logdir, tmp_path):
    s = Setup(broker, logdir, tmp_path)
    yield s
    s.stop()


def test_pii_is_ciphertext_on_the_topic_and_plaintext_only_for_its_readers(setup):
    s = setup
    produced = []
    for codec in CODECS:
        values = [order(i, codec, email=i % 2 == 0) for i in range(6)]
        refused = order(99, codec, total=0)
        reports = s.produce("alice", s.topic, values, codec=codec)
        assert [e for _, e in reports] == [None] * len(values), reports
        # A partition is judged whole: the refused record goes in a request of its own.
        [(_, error)] = s.produce("alice", s.topic, [refused], codec=codec)
        assert error is not None and error.code() == KafkaError.INVALID_RECORD, error
        produced += [json.loads(v) for v in values]

    # On the topic, bypassing meshgate: envelopes where pii was, the rest as produced, and an
    # independent implementation opens each envelope to the value produced.
    stored = s.read(s.topic, n=len(produced))
    assert len(stored) == len(produced), (len(stored), len(produced))
    for want, got in zip(produced, stored):
        assert got["order_id"] == want["order_id"] and got["order_total"] == want["order_total"]
        for field in ("customer_id", "email"):
            if field not in want:
                assert field not in got
                continue
            assert got[field].startswith("mg1:") and want[field] not in got[field], got
            assert pii_envelope.open_field(got[field], s.topic, field, s.key_dir, s.kek) == want[field]

    # Through meshgate: alice reads exactly what was produced, each record once; bob the mask.
    assert s.read(s.topic, user="alice", n=len(produced)) == produced
    masked = s.read(s.topic, user="bob", n=len(produced))
    assert [m["order_id"] for m in masked] == [p["order_id"] for p in produced]
    for want, got in zip(produced, masked):
        assert got["customer_id"] == "***"
        assert got.get("email") == ("***" if "email" in want else None), got

    # Counted per contract: every non-null pii field sealed once, opened for alice, masked for bob.
    metrics = s.gw.metrics()
    fields = sum(1 for p in produced for f in ("customer_id", "email") if f in p)

    def count(op):
        line = next(l for l in metrics.splitlines()
                    if l.startswith("meshgate_contract_protected_fields_total{")
                    and f'op="{op}"' in l and f'contract="pii-{s.run}"' in l)
        return float(line.rsplit(" ", 1)[1])
    assert count("sealed") == fields
    assert count("opened") >= fields and count("masked") >= fields
    assert count("unreadable") == 0

    # The catalog says which fields are protected, who reads them and what the others see.
    product = next(p for p in json.loads(s.gw.admin("/catalog")[1])["data_products"]
                   if p["topic"] == s.topic)
    protection = {f["name"]: f.get("protection") for f in product["schema"]["fields"]}
    assert protection == {"order_id": None, "customer_id": "encrypt", "email": "encrypt",
                          "order_total": None}, protection
    assert product["protection"] == {"readers": ["User:alice"], "mask": "***"}

    # No produced pii value is in the gateway's log, metrics, catalog or audit trail (which
    # holds every refusal, with its message, and is flushed within a second).
    time.sleep(1.5)
    audit = s.audit.read_text()
    assert '"rule":"order_total > 0"' in audit.replace(": ", ":"), audit[-2000:]
    text = s.gw.log_text() + metrics + s.gw.admin("/catalog")[1] + audit
    for p in produced:
        assert p["customer_id"] not in text and p.get("email", "@@") not in text


def test_the_java_transactional_producer_and_read_committed_consumer_work_through_it(setup):
    from kafka_cluster import USERS, classpath, java
    s = setup
    env = {**os.environ, "MESHGATE_SASL_USER": "alice",
           "MESHGATE_SASL_PASSWORD": dict(USERS)["alice"]}
    out = subprocess.run(
        [java(), "-cp", classpath(), str(ROOT / "tests" / "clients" / "java" / "ClientCheck.java"),
         "txn", s.gw.bootstrap, s.topic, f"txn-{s.run}"],
        capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # alice reads plaintext through meshgate, read_committed: committed and after, not aborted.
    read = [json.loads(v) for v in r["read_committed"]]
    assert sorted(v["order_id"] for v in read) == ["after-0", "committed-0", "committed-1",
                                                  "committed-2"], r
    assert {v["customer_id"] for v in read} == {"c"}, read
    assert r["refused_commit"], r
    # On the topic: envelopes, under the transaction's markers.
    stored = s.read(s.topic, n=4)
    assert stored and all(v["customer_id"].startswith("mg1:") for v in stored), stored


def test_large_answers_are_shown_as_they_stream_to_librdkafka_and_java(setup):
    """Fetch answers over 256 KiB are shown as they stream: each protected set keeps its length
    and ends in a filler batch the clients skip. Both clients read every record exactly once:
    alice in plaintext, bob masked."""
    from kafka_cluster import USERS, classpath, java
    s = setup
    produced = []
    for codec in ("none", "lz4"):
        values = [json.dumps({**json.loads(order(i, codec)),
                              "order_id": f"{codec}-{i}-" + "n" * 900}) for i in range(2500)]
        # Batches of about 200 KB: a sealed one stays under the broker's 1 MB message limit,
        # and each 1 MB set of a Fetch answer holds several.
        reports = s.produce("alice", s.topic, values, codec=codec, timeout_ms=60000,
                            conf={"batch.size": 200000})
        assert [e for _, e in reports] == [None] * len(values), reports[:3]
        produced += [json.loads(v) for v in values]

    def streamed():
        line = next(l for l in s.gw.metrics().splitlines()
                    if l.startswith("meshgate_responses_streamed_total"))
        return float(line.rsplit(" ", 1)[1])
    before = streamed()
    assert s.read(s.topic, user="alice", n=len(produced), timeout=60) == produced
    assert streamed() > before, "no answer was streamed: the test reads nothing it means to"
    masked = s.read(s.topic, user="bob", n=len(produced), timeout=60)
    assert [m["order_id"] for m in masked] == [p["order_id"] for p in produced]
    assert {m["customer_id"] for m in masked} == {"***"} and {m["email"] for m in masked} == {"***"}

    env = {**os.environ, "MESHGATE_SASL_USER": "alice",
           "MESHGATE_SASL_PASSWORD": dict(USERS)["alice"]}
    out = subprocess.run(
        [java(), "-cp", classpath(), str(ROOT / "tests" / "clients" / "java" / "ClientCheck.java"),
         "consume-assigned", s.gw.bootstrap, s.topic, str(len(produced)), "from-zero"],
        capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" not in r, r
    assert [json.loads(v) for v in r["values"]] == produced


def test_a_shredded_key_masks_its_fields_for_every_reader(setup):
    s = setup
    values = [order(i, "shred") for i in range(3)]
    assert all(e is None for _, e in s.produce("alice", s.topic, values))
    assert [v["customer_id"] for v in s.read(s.topic, user="alice", n=3)] == \
        [json.loads(v)["customer_id"] for v in values]
    keys = list((s.key_dir / s.topic).glob("*.key"))
    assert keys
    for k in keys:
        k.unlink()
    time.sleep(2)  # past key_cache_secs: the gateway checks the files again
    after = s.read(s.topic, user="alice", n=3)
    assert [v["customer_id"] for v in after] == ["***"] * 3, after
    assert [v["email"] for v in after] == ["***"] * 3
    assert [v["order_id"] for v in after] == ["shred-0", "shred-1", "shred-2"]


def test_a_dry_run_with_the_gateways_keys_judges_the_plaintext_of_protected_fields(setup, tmp_path):
    """`meshgate replay --dry-run` on a protected topic: without keys a rule about a protected
    field sees the stored envelopes (and says so); with the gateway's config it sees the
    plaintext, as the gateway did on produce. No plaintext reaches its output."""
    s = setup
    values = [order(i, "dry") for i in range(5)]
    assert [e for _, e in s.produce("alice", s.topic, values)] == [None] * 5
    change = tmp_path / "change"
    change.mkdir()
    text = CONTRACT.format(name=f"pii-{s.run}", topic=s.topic, sealed=s.sealed).replace(
        'validity_rules: ["order_total > 0"]',
        'validity_rules: ["order_total > 0", "email LIKE \'%@example.org\'"]')
    assert "LIKE" in text
    (change / "pii.yaml").write_text(text)
    binary = os.environ.get("MESHGATE_BIN") or str(ROOT / "target" / "debug" / "meshgate")
    cmd = [binary, "replay", "--dry-run", "--from", s.topic, "--policies", str(change),
           "--bootstrap", s.broker.bootstrap, "--last", "100", "--json"]
    stored = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    result = json.loads(stored.stdout)
    assert result["protected"] == "as_stored", result
    assert (result["records"], result["rejected"]) == (5, 5), result
    assert [r["rule"] for r in result["by_rule"]] == ["email LIKE '%@example.org'"], result

    opened = subprocess.run([*cmd, "--config", str(s.config)], capture_output=True, text=True,
                            timeout=60)
    assert opened.returncode == 0, opened.stdout + opened.stderr
    result = json.loads(opened.stdout)
    assert result["protected"] == "opened", result
    assert (result["records"], result["accepted"], result["rejected"]) == (5, 5, 0), result
    for v in map(json.loads, values):
        for out in (stored, opened):
            assert v["email"] not in out.stdout + out.stderr
            assert v["customer_id"] not in out.stdout + out.stderr
    # --config is for a dry run only: a replay that writes never opens envelopes.
    refused = subprocess.run([binary, "replay", "--from", s.topic, "--to", "x.v1", "--policies",
                              str(change), "--config", str(s.config)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "cannot be used with" in refused.stderr, refused.stderr


def test_require_encrypted_refuses_plaintext_and_takes_envelopes(setup):
    s = setup
    # An envelope as meshgate writes it, from the protected topic.
    assert all(e is None for _, e in s.produce("alice", s.topic, [order(0, "env")]))
    envelope = s.read(s.topic, n=1)[0]["email"]
    plain = json.dumps({"id": 1, "email": "someone@example.org"})
    sealed = json.dumps({"id": 2, "email": envelope})
    [(_, error)] = s.produce("alice", s.sealed, [plain])
    assert error is not None and error.code() == KafkaError.INVALID_RECORD, error
    assert 'rule="require_encrypted"' in s.gw.metrics()
    assert s.produce("alice", s.sealed, [sealed]) == [(sealed, None)]
    assert s.read(s.sealed, n=1) == [json.loads(sealed)]


def test_an_unreachable_key_store_fails_produce_retriably_and_writes_nothing(broker, logdir, tmp_path):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    (tmp_path / "token").write_text("s.none")
    s = Setup(broker, logdir, tmp_path,
              kms=f"{{vault: {{address: 'http://127.0.0.1:{dead}', key: meshgate, "
                  f"token_file: {tmp_path / 'token'}, timeout_secs: 1}}}}")
    try:
        reports = s.produce("alice", s.topic, [order(i, "down") for i in range(3)], timeout_ms=6000)
        assert len(reports) == 3 and all(e is not None for _, e in reports), reports
        # Retried until the delivery timeout: the broker never wrote them.
        assert all(e.code() in (KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)
                   for _, e in reports), reports
        assert s.read(s.topic, n=0, timeout=6) == []
        assert 'rule="protect"' in s.gw.metrics()
    finally:
        s.stop()


def test_a_partner_zone_shows_protected_fields_as_the_contract_says(broker, logdir, tmp_path):
    """Through a partner zone's listener, by alias: the pii reader gets plaintext, another
    partner principal the mask (the answer is shown, then renamed back to the alias)."""
    s = Setup(broker, logdir, tmp_path, zone=True)
    try:
        values = [order(i, "zone") for i in range(4)]
        assert all(e is None for _, e in s.produce("alice", s.topic, values))
        produced = [json.loads(v) for v in values]
        assert s.read("partner.pii", user="alice", n=4, bootstrap=s.zone) == produced
        masked = s.read("partner.pii", user="bob", n=4, bootstrap=s.zone)
        assert [m["customer_id"] for m in masked] == ["***"] * 4, masked
        assert [m["order_id"] for m in masked] == [p["order_id"] for p in produced]
    finally:
        s.stop()


def test_avro_fields_are_sealed_in_place_and_read_with_the_schema_they_name(broker, logdir, tmp_path):
    """An Avro contract's pii fields (a string, a nullable string) are sealed in place: the
    stored records still decode with the writer schema they name, and hold envelopes that an
    independent implementation opens to the bytes produced. Through meshgate alice reads what
    was produced, bob the mask, both with Confluent's AvroDeserializer."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    s = Setup(broker, logdir, tmp_path, avro=True)
    try:
        sr = SchemaRegistryClient({"url": f"http://127.0.0.1:{s.gw.admin_port}/registry"})
        ctx = SerializationContext(s.topic, MessageField.VALUE)
        serialize = AvroSerializer(sr, conf={"auto.register.schemas": False,
                                             "use.latest.version": True})
        deserialize = AvroDeserializer(sr)
        produced = []
        for codec in ("none", "zstd"):
            values = [json.loads(order(i, codec, email=i % 2 == 0)) for i in range(6)]
            for v in values:
                v.setdefault("email", None)
            reports = s.produce("alice", s.topic, [serialize(v, ctx) for v in values], codec=codec)
            assert [e for _, e in reports] == [None] * len(values), reports
            refused = {**values[0], "order_id": f"{codec}-refused", "order_total": 0.0}
            [(_, error)] = s.produce("alice", s.topic, [serialize(refused, ctx)], codec=codec)
            assert error is not None and error.code() == KafkaError.INVALID_RECORD, error
            produced += values

        avro = lambda raw: deserialize(raw, ctx)
        # On the topic, bypassing meshgate: valid records of the schema they name, envelopes
        # where pii was, opened by pii_envelope.py to the bytes produced.
        stored = s.read(s.topic, n=len(produced), decode=avro)
        assert len(stored) == len(produced), (len(stored), len(produced))
        for want, got in zip(produced, stored):
            assert (got["order_id"], got["order_total"]) == (want["order_id"], want["order_total"])
            for field in ("customer_id", "email"):
                if want[field] is None:
                    assert got[field] is None, got
                    continue
                assert got[field].startswith("mg1:") and want[field] not in got[field], got
                plain = pii_envelope.open_bytes(got[field], s.topic, field, s.key_dir, s.kek)
                assert plain == want[field].encode()

        # Through meshgate: alice reads exactly what was produced, each record once; bob masks.
        assert s.read(s.topic, user="alice", n=len(produced), decode=avro) == produced
        masked = s.read(s.topic, user="bob", n=len(produced), decode=avro)
        assert [m["order_id"] for m in masked] == [p["order_id"] for p in produced]
        for want, got in zip(produced, masked):
            assert got["customer_id"] == "***"
            assert got["email"] == ("***" if want["email"] else None), got
        text = s.gw.log_text() + s.gw.metrics() + s.audit.read_text()
        for p in produced:
            assert p["customer_id"] not in text
    finally:
        s.stop()
