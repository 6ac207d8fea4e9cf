"""Transport security and identity, end to end: TLS on both sides of meshgate, mutual TLS with
principals from certificates, owner-only produce, certificate reload, SASL (PLAIN and SCRAM)
through meshgate to Apache Kafka's own SASL listeners, the admin endpoint over HTTPS with a bearer
token, and logs that never carry a secret.

Certificates are generated in the test (trustme). One Kafka node serves TLS itself (a PEM key
store), SASL_PLAINTEXT and SASL_SSL with the users of tests/e2e/kafka_cluster.py: meshgate's
upstream connections, bootstrap and per-broker, are TLS or SASL as the listener says.
"""

import json
import shutil
import socket
import subprocess
import ssl
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import trustme
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from cryptography.hazmat.primitives import serialization

from clients import consume, create_topic, produce
from conftest import start_gateway, start_kafka
from kafka_cluster import USERS, Tls

PASSWORD = dict(USERS)


class Pki:
    """A server CA (brokers and meshgate), a client CA (mutual TLS) and a CA nobody trusts."""

    def __init__(self, d: Path):
        self.dir = d
        self.server_ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.server_ca.cert_pem.write_to_path(str(d / "server-ca.pem"))
        self.client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
        self.other_ca.cert_pem.write_to_path(str(d / "other-ca.pem"))

    def server(self, name: str, ca=None):
        """(cert, key) files for a server at 127.0.0.1 / localhost."""
        issued = (ca or self.server_ca).issue_cert("127.0.0.1", "localhost")
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        # Leaf first, then the chain.
        cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return cert, key

    def client(self, cn: str):
        issued = self.client_ca.issue_cert(f"{cn}.clients.test", common_name=cn)
        cert, key = self.dir / f"client-{cn}.pem", self.dir / f"client-{cn}.key"
        cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_kafka(pki, logdir):
    """One Kafka node with SSL, SASL_PLAINTEXT and SASL_SSL listeners of its own."""
    cert, key = pki.server("broker")
    # Kafka's PEM key store wants a PKCS#8 key followed by the certificate chain.
    pkcs8 = serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    keystore = pki.dir / "broker-keystore.pem"
    keystore.write_bytes(pkcs8 + cert.read_bytes())
    broker = start_kafka(logdir, tls=Tls(keystore, pki.dir / "server-ca.pem"), name="kafka-secure")
    yield broker
    broker.stop()


class Listener:
    """One listener of the secure cluster, as the upstream meshgate is given."""

    def __init__(self, broker, name):
        self.bootstrap = broker.cluster.bootstrap(name)


@pytest.fixture(scope="module")
def tls_broker(secure_kafka):
    return Listener(secure_kafka, "SSL")


@pytest.fixture(scope="module")
def sasl_broker(secure_kafka):
    return Listener(secure_kafka, "SASL_PLAINTEXT")


def tls_client(pki, ca="server-ca.pem", cert=None):
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki.dir / ca)}
    if cert:
        conf["ssl.certificate.location"] = str(cert[0])
        conf["ssl.key.location"] = str(cert[1])
    return conf


@pytest.fixture(scope="module")
def tls_gateway(pki, tls_broker, logdir):
    cert, key = pki.server("gateway")
    gw = start_gateway(tls_broker.bootstrap, logdir, extra_args=[
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--upstream-tls", "--upstream-ca", str(pki.dir / "server-ca.pem")])
    yield gw
    assert gw.stop() == 0


def test_tls_on_both_sides_produces_and_consumes_exactly(pki, tls_gateway):
    conf = tls_client(pki)
    topic = f"e2e.tls{uuid.uuid4().hex[:8]}.v1"
    create_topic(tls_gateway.bootstrap, topic, conf=conf)
    values = [f"tls-{i}".encode() for i in range(300)]
    reports = produce(tls_gateway.bootstrap, topic, values, extra=conf)
    assert [e for _, e in reports if e is not None] == []
    got = consume(tls_gateway.bootstrap, [topic], len(values), extra=conf)
    assert sorted(got) == sorted(values), "each record exactly once"


def test_an_untrusted_or_plaintext_client_fails_and_harms_no_one(pki, tls_gateway):
    conf = tls_client(pki)
    topic = f"e2e.tls{uuid.uuid4().hex[:8]}.v1"
    create_topic(tls_gateway.bootstrap, topic, conf=conf)
    # A producer connected before the bad clients arrive.
    good = Producer({"bootstrap.servers": tls_gateway.bootstrap, **conf, "linger.ms": 5})
    good.produce(topic, b"before")
    assert good.flush(15) == 0
    failures_before = handshake_failures(tls_gateway)

    # A client that trusts another CA cannot complete the handshake.
    untrusted = AdminClient({"bootstrap.servers": tls_gateway.bootstrap,
                             **tls_client(pki, ca="other-ca.pem")})
    with pytest.raises(KafkaException):
        untrusted.list_topics(timeout=5)

    # A plaintext Kafka request on the TLS port: the connection is closed, nothing answers it.
    api_versions_v0 = bytes.fromhex("0000000f" "0012" "0000" "00000001" "0005" "6e6f746c73")
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as s:
        s.sendall(api_versions_v0)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    # Whatever came back (a TLS alert at most) is not a Kafka response with our correlation id.
    assert answer[4:8] != bytes.fromhex("00000001")

    # The earlier connection is unharmed.
    good.produce(topic, b"after")
    assert good.flush(15) == 0
    got = consume(tls_gateway.bootstrap, [topic], 2, extra=conf)
    assert sorted(got) == [b"after", b"before"]
    assert handshake_failures(tls_gateway) >= failures_before + 2


def handshake_failures(gw) -> float:
    for line in gw.metrics().splitlines():
        if line.startswith("meshgate_tls_handshake_failures_total "):
            return float(line.split()[1])
    raise AssertionError("meshgate_tls_handshake_failures_total is not exported")


def test_an_upstream_with_an_untrusted_certificate_is_refused(pki, tls_broker, logdir):
    cert, key = pki.server("gateway-untrusting")
    gw = start_gateway(tls_broker.bootstrap, logdir, wait_ready=False, extra_args=[
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--upstream-tls", "--upstream-ca", str(pki.dir / "other-ca.pem")])
    try:
        end = time.time() + 15
        while time.time() < end and "upstream TLS handshake failed" not in gw.log_text():
            time.sleep(0.2)
        assert "upstream TLS handshake failed" in gw.log_text()
        assert "UnknownIssuer" in gw.log_text() or "invalid peer certificate" in gw.log_text()
        status, body = gw.admin("/readyz")
        assert status == 503, body
    finally:
        assert gw.stop() == 0


OWNED_CONTRACT = """
contract:
  name: owned-{suffix}
  owner: orders-domain-team
  topic: {topic}
  producers: [{producer}]
"""


def owned_policies(tmp_path, topic, producer) -> Path:
    """A policy directory whose one contract lets only `producer` write to `topic`."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "owned.yaml").write_text(OWNED_CONTRACT.format(
        suffix=uuid.uuid4().hex[:6], topic=topic, producer=producer))
    return policies


def test_mutual_tls_principals_and_owner_only_produce(pki, tls_broker, logdir, tmp_path):
    topic = f"e2e.owned{uuid.uuid4().hex[:8]}.v1"
    policies = owned_policies(tmp_path, topic, "User:orders-svc")
    cert, key = pki.server("gateway-mtls")
    gw = start_gateway(tls_broker.bootstrap, logdir, policies=policies, extra_args=[
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--tls-client-ca", str(pki.dir / "client-ca.pem"),
        # Kafka's default principal is the whole subject (CN=orders-svc,OU=...,O=...); map it
        # to the CN as a Kafka cluster would with the same ssl.principal.mapping.rules.
        "--tls-principal-mapping-rules", "RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
        "--upstream-tls", "--upstream-ca", str(pki.dir / "server-ca.pem")])
    try:
        owner = tls_client(pki, cert=pki.client("orders-svc"))
        intruder = tls_client(pki, cert=pki.client("intruder"))
        create_topic(gw.bootstrap, topic, conf=owner)

        values = [f'{{"n": {i}}}'.encode() for i in range(50)]
        reports = produce(gw.bootstrap, topic, values, extra=owner)
        assert [e for _, e in reports if e is not None] == []
        assert "principal=User:orders-svc" in gw.log_text()

        bad = produce(gw.bootstrap, topic, [b'{"n": -1}'] * 3,
                      extra={**intruder, "enable.idempotence": False, "retries": 0})
        codes = {e.code() for _, e in bad}
        assert codes == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, bad

        # No client certificate: the handshake is refused.
        anonymous = AdminClient({"bootstrap.servers": gw.bootstrap, **tls_client(pki)})
        with pytest.raises(KafkaException):
            anonymous.list_topics(timeout=5)

        got = consume(gw.bootstrap, [topic], len(values), extra=owner)
        assert sorted(got) == sorted(values), "only the owner's records, each once"
        assert 'policy="producers"' in gw.metrics()
    finally:
        assert gw.stop() == 0


def test_certificates_reload_without_dropping_live_connections(pki, tls_broker, logdir, tmp_path):
    cert, key = pki.server("gateway-reload")
    gw = start_gateway(tls_broker.bootstrap, logdir, extra_args=[
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--upstream-tls", "--upstream-ca", str(pki.dir / "server-ca.pem")])
    try:
        first = tls_client(pki)
        topic = f"e2e.reload{uuid.uuid4().hex[:8]}.v1"
        create_topic(gw.bootstrap, topic, conf=first)
        live = Producer({"bootstrap.servers": gw.bootstrap, **first, "linger.ms": 5})
        for i in range(10):
            live.produce(topic, f"old-{i}".encode())
        assert live.flush(15) == 0

        # A certificate from another CA replaces the files (as cert-manager would).
        new_cert, new_key = pki.server("gateway-reload-next", ca=pki.other_ca)
        shutil.copy(new_key, key)
        shutil.copy(new_cert, cert)
        second = tls_client(pki, ca="other-ca.pem")
        end = time.time() + 15
        while True:
            try:
                AdminClient({"bootstrap.servers": gw.bootstrap, **second}).list_topics(timeout=3)
                break
            except KafkaException:
                assert time.time() < end, "the new certificate was never served"
                time.sleep(0.5)
        assert "TLS certificate reloaded" in gw.log_text()

        # The connection made under the old certificate still works.
        for i in range(10):
            live.produce(topic, f"new-{i}".encode())
        assert live.flush(15) == 0
        got = consume(gw.bootstrap, [topic], 20, extra=second)
        assert len(got) == 20 and len(set(got)) == 20
    finally:
        assert gw.stop() == 0


def test_admin_endpoint_over_https_with_a_bearer_token(pki, broker, logdir, tmp_path):
    cert, key = pki.server("admin")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-admin-token\n")
    ctx = ssl.create_default_context(cafile=str(pki.dir / "server-ca.pem"))
    gw = start_gateway(broker.bootstrap, logdir, extra_args=[
        "--admin-tls-cert", str(cert), "--admin-tls-key", str(key),
        "--admin-token-file", str(token_file)],
        admin_scheme="https", admin_context=ctx, admin_token="s3cret-admin-token")
    try:
        assert gw.admin("/metrics")[0] == 200
        gw.admin_token = None
        assert gw.admin("/healthz")[0] == 200, "liveness needs no token"
        assert gw.admin("/metrics")[0] == 401
        assert gw.admin("/catalog", token="wrong")[0] == 401
        assert gw.admin("/registry/subjects")[0] == 401
        # Plain HTTP on the HTTPS port gets no answer.
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/healthz", timeout=5).read()
        assert "s3cret-admin-token" not in gw.log_text()
    finally:
        assert gw.stop() == 0


def scram(user, password=None, mechanism="SCRAM-SHA-512"):
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": mechanism,
            "sasl.username": user, "sasl.password": password or PASSWORD[user]}


CANARY_CONTRACT = """
contract:
  name: canary-{suffix}
  owner: shop-team
  topic: {topic}
  mode: canary
  canary: {{ principals: ['User:alice'] }}
  schema:
    format: json
    definition: {{"type": "record", "name": "N", "fields": [{{"name": "n", "type": "long"}}]}}
  quality:
    validity_rules: [n > 0]
"""


def test_a_canary_enforces_for_its_principal_and_shadows_for_the_others(pki, sasl_broker, logdir,
                                                                        tmp_path):
    topic = f"e2e.canary{uuid.uuid4().hex[:8]}.v1"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "canary.yaml").write_text(CANARY_CONTRACT.format(suffix=uuid.uuid4().hex[:6], topic=topic))
    gw = start_gateway(sasl_broker.bootstrap, logdir, policies=policies)
    try:
        alice = scram("alice")
        create_topic(gw.bootstrap, topic, conf=alice)
        def one_by_one(conf, values):
            """Each record in its own request, so each gets its own verdict."""
            p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": False,
                          "retries": 0, **conf})
            out = []
            for v in values:
                box = []
                p.produce(topic, value=v, partition=0, on_delivery=lambda err, msg: box.append(err))
                p.flush(15)
                out.append(box[0].code() if box and box[0] else (None if box else "undelivered"))
            return out

        # alice is the canary: her invalid record is refused, her valid one lands.
        assert one_by_one(alice, [b'{"n": -1}', b'{"n": 1}']) == [KafkaError.INVALID_RECORD, None]
        # bob is on the shadow side: both land, and the would-reject is counted as a canary's.
        assert one_by_one(scram("bob"), [b'{"n": -2}', b'{"n": 2}']) == [None, None]
        got = consume(gw.bootstrap, [topic], 3, extra=alice)
        assert sorted(got) == sorted([b'{"n": 1}', b'{"n": -2}', b'{"n": 2}'])
        text = gw.metrics()
        assert f'meshgate_policy_would_reject_total{{mode="canary",policy="contract",rule="n > 0",topic="{topic}"}} 1\n' in text, text
        assert f'meshgate_policy_rejections_total{{policy="contract",rule="n > 0",topic="{topic}"}} 1\n' in text, text
        # A producer team sees its own recent rejections on the catalog, and only its own.
        status, body = gw.admin("/catalog/rejections?principal=User:alice")
        mine = [r for r in json.loads(body)["rejections"] if r["topic"] == topic]
        assert status == 200 and len(mine) == 1, body
        assert (mine[0]["rule"], mine[0]["error_code"], mine[0]["partition"]) == ("n > 0", 87, 0)
        assert json.loads(gw.admin("/catalog/rejections?principal=User:bob")[1])["rejections"] == []
        page = gw.admin("/catalog?format=html&principal=User:alice")[1]
        assert "Recent rejections (1)" in page and "<code>n &gt; 0</code>" in page, page[-3000:]
    finally:
        assert gw.stop() == 0


def test_scram_through_meshgate_principals_and_clean_logs(pki, sasl_broker, logdir, tmp_path):
    topic = f"e2e.sasl{uuid.uuid4().hex[:8]}.v1"
    policies = owned_policies(tmp_path, topic, "User:alice")
    # Ready although meshgate itself cannot authenticate: the broker answers ApiVersions.
    gw = start_gateway(sasl_broker.bootstrap, logdir, policies=policies, rust_log="debug")
    try:
        alice = scram("alice")
        create_topic(gw.bootstrap, topic, conf=alice)
        values = [f'{{"n": {i}}}'.encode() for i in range(40)]
        reports = produce(gw.bootstrap, topic, values, extra=alice)
        assert [e for _, e in reports if e is not None] == []

        # bob authenticates, but is not among the topic's producers.
        bad = produce(gw.bootstrap, topic, [b'{"n": -1}'] * 2,
                      extra={**scram("bob"), "enable.idempotence": False,
                             "retries": 0})
        assert {e.code() for _, e in bad} == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, bad

        # A wrong password: the broker's authentication error reaches the client.
        errors = []
        wrong = AdminClient({"bootstrap.servers": gw.bootstrap, "error_cb": errors.append,
                             **scram("alice", "not-the-pw-5d1e")})
        with pytest.raises(KafkaException):
            wrong.list_topics(timeout=5)
        wrong.poll(1)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
        # The broker's own verdict reached the client unchanged.
        assert any("invalid credentials with SASL mechanism SCRAM-SHA-512" in e.str()
                   for e in errors), errors

        got = consume(gw.bootstrap, [topic], len(values), extra=alice)
        assert sorted(got) == sorted(values)

        # The gateway logged at debug level throughout three SASL sessions.
        log = gw.log_text()
        assert "SASL authentication accepted by the broker principal=User:alice" in log
        assert "SASL authentication accepted by the broker principal=User:bob" in log
        assert "SASL authentication refused by the broker" in log
        for secret in [PASSWORD["alice"], PASSWORD["bob"], "not-the-pw-5d1e"]:
            assert secret not in log, f"{secret} leaked into the log"
    finally:
        assert gw.stop() == 0


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_to_meshgate_with_each_mechanism(pki, sasl_broker, logdir, tmp_path,
                                                       mechanism):
    """SASL_SSL from the client: SASL frames inside meshgate's TLS, forwarded unchanged to the
    SASL broker; the principal each mechanism reveals owns the topic."""
    topic = f"e2e.sasltls{uuid.uuid4().hex[:8]}.v1"
    cert, key = pki.server(f"gateway-sasl-{mechanism.lower()}")
    gw = start_gateway(sasl_broker.bootstrap, logdir,
                       policies=owned_policies(tmp_path, topic, "User:alice"),
                       extra_args=["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        conf = {**tls_client(pki), "security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism,
                "sasl.username": "alice", "sasl.password": PASSWORD["alice"]}
        create_topic(gw.bootstrap, topic, conf=conf)
        values = [f'{{"m": "{mechanism}", "n": {i}}}'.encode() for i in range(25)]
        reports = produce(gw.bootstrap, topic, values, extra=conf)
        assert [e for _, e in reports if e is not None] == []
        assert sorted(consume(gw.bootstrap, [topic], len(values), extra=conf)) == sorted(values)
        assert "SASL authentication accepted by the broker principal=User:alice" in gw.log_text()
        assert PASSWORD["alice"] not in gw.log_text()
    finally:
        assert gw.stop() == 0


def test_tls_failures_log_no_key_material(pki, tls_gateway):
    """The TLS gateway's whole log, after handshakes failed and succeeded, holds no private key."""
    untrusted = AdminClient({"bootstrap.servers": tls_gateway.bootstrap,
                             **tls_client(pki, ca="other-ca.pem")})
    with pytest.raises(KafkaException):
        untrusted.list_topics(timeout=3)
    log = tls_gateway.log_text()
    assert "handshake failed" in log
    assert "PRIVATE KEY" not in log
    for name in ["gateway.key", "broker.key"]:
        body = "".join((pki.dir / name).read_text().splitlines()[1:-1])
        for i in range(0, len(body) - 24, 24):
            assert body[i:i + 24] not in log, f"{name} material in the log"


def test_replay_dry_run_reads_a_tls_listener(pki, tls_broker, tmp_path):
    """`meshgate replay --dry-run --tls` verifies the brokers' certificates against --tls-ca and
    judges what it reads; a CA the brokers' certificates do not chain to is refused."""
    from conftest import ROOT
    topic = f"e2e.replaytls{uuid.uuid4().hex[:8]}.v1"
    conf = tls_client(pki)
    create_topic(tls_broker.bootstrap, topic, partitions=2, conf=conf)
    values = [b'{"n": 1}', b'{"n": -1}', b'{"n": 2}', b'{"n": -2}', b'{"n": 3}']
    reports = produce(tls_broker.bootstrap, topic, values, extra=conf)
    assert [e for _, e in reports if e is not None] == []
    policies = tmp_path / "replay-policies"
    policies.mkdir()
    (policies / "c.yaml").write_text(
        f"contract:\n  name: replay-tls\n  owner: o\n  topic: {topic}\n"
        "  schema:\n    format: json\n"
        '    definition: {"type": "record", "name": "N", "fields": [{"name": "n", "type": "long"}]}\n'
        "  quality:\n    validity_rules: [n > 0]\n")
    binary = ROOT / "target" / "debug" / "meshgate"
    cmd = [binary, "replay", "--dry-run", "--from", topic, "--last", "10", "--policies", policies,
           "--bootstrap", tls_broker.bootstrap, "--json", "--tls"]
    ok = subprocess.run([*cmd, "--tls-ca", pki.dir / "server-ca.pem"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    result = json.loads(ok.stdout)
    assert (result["records"], result["accepted"], result["rejected"]) == (5, 3, 2), result
    wrong = subprocess.run([*cmd, "--tls-ca", pki.dir / "other-ca.pem"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "TLS" in wrong.stderr, wrong.stderr


def test_replay_dry_run_authenticates_with_sasl_plain(sasl_broker, tmp_path):
    """`meshgate replay --dry-run` on a SASL listener: PLAIN with the password read from a file;
    a wrong password is refused with the broker's error, and no password reaches the output."""
    from conftest import ROOT
    topic = f"e2e.replaysasl{uuid.uuid4().hex[:8]}.v1"
    alice = scram("alice")
    create_topic(sasl_broker.bootstrap, topic, partitions=1, conf=alice)
    reports = produce(sasl_broker.bootstrap, topic, [b'{"n": 1}', b'{"n": -1}'], extra=alice)
    assert [e for _, e in reports if e is not None] == []
    policies = tmp_path / "replay-sasl-policies"
    policies.mkdir()
    (policies / "c.yaml").write_text(
        f"contract:\n  name: replay-sasl\n  owner: o\n  topic: {topic}\n"
        "  quality:\n    validity_rules: [n > 0]\n")
    password = tmp_path / "password"
    password.write_text(PASSWORD["alice"] + "\n")
    binary = ROOT / "target" / "debug" / "meshgate"
    cmd = [binary, "replay", "--dry-run", "--from", topic, "--policies", policies,
           "--bootstrap", sasl_broker.bootstrap, "--json", "--sasl-user", "alice", "--sasl-password-file"]
    ok = subprocess.run([*cmd, password], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    result = json.loads(ok.stdout)
    assert (result["records"], result["accepted"], result["rejected"]) == (2, 1, 1), result
    wrong_password = tmp_path / "wrong"
    wrong_password.write_text("not-the-password-7c1\n")
    bad = subprocess.run([*cmd, wrong_password], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "SASL/PLAIN authentication failed" in bad.stderr, bad.stderr
    assert "not-the-password-7c1" not in bad.stderr + bad.stdout
    assert PASSWORD["alice"] not in ok.stdout + ok.stderr
