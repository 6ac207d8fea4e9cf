"""Harness for the end-to-end suite: a real broker, the real meshgate binary, real clients.

The broker of record is Apache Kafka (tests/e2e/kafka_cluster.py, from the jars scripts/setup
caches): the `broker` fixture and every test that starts its own cluster. tansu 0.6.0 is the second
upstream, for the smoke subset in test_tansu.py (the `tansu` fixture).

Environment:
  MESHGATE_BIN  the gateway binary (default: target/debug/meshgate)
  TANSU_BIN     the tansu binary (default: `tansu` on PATH)
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


_next_block = [20_000 + (os.getpid() % 300) * 40]


def port_block(size: int) -> int:
    """A run of `size` free ports below the ephemeral range (the gateway needs its listen port and
    the ports after it, one per broker)."""
    while True:
        base = _next_block[0]
        _next_block[0] = 20_000 + (base - 20_000 + size) % 12_000
        if all(port_is_free(p) for p in range(base, base + size)):
            return base


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1"):
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


def http_get(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_tansu(port: int, logdir: Path, storage: str = "memory://tansu/", advertised_port=None,
                extra_args=(), binary=None, cwd=None) -> Broker:
    binary = binary or os.environ.get("TANSU_BIN") or shutil.which("tansu")
    if not binary:
        pytest.fail("tansu not found: run scripts/setup tansu")
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log = logdir / f"tansu-{port}.log"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
         "--storage-engine", storage, *extra_args],
        stdout=open(log, "a"), stderr=subprocess.STDOUT, cwd=cwd,
    )
    wait_for_port(port)
    return Broker(port, proc, log)


@dataclass
class KafkaBroker:
    """An Apache Kafka cluster behind one bootstrap address (its first node's PLAINTEXT port)."""
    cluster: object

    @property
    def port(self) -> int:
        return self.cluster.nodes[0].ports["PLAINTEXT"]

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap()

    def ports(self) -> set:
        return self.cluster.ports()

    def stop(self):
        self.cluster.stop()


def start_kafka(logdir: Path, nodes: int = 1, tls=None, name: str | None = None) -> KafkaBroker:
    from kafka_cluster import KafkaCluster
    d = logdir / (name or f"kafka-{uuid.uuid4().hex[:8]}")
    try:
        cluster = KafkaCluster(d, size=nodes, tls=tls).start()
    except RuntimeError as e:
        pytest.fail(str(e))
    return KafkaBroker(cluster)


@dataclass
class Gateway:
    port: int
    admin_port: int
    proc: subprocess.Popen
    log: Path
    policies: Path

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def broker_port_base(self) -> int:
        return self.port + 1

    admin_scheme: str = "http"
    admin_context: object = None
    admin_token: str | None = None
    # The listen (and admin) address; a loopback other than 127.0.0.1 lets several gateways
    # use the same ports, as on separate machines.
    host: str = "127.0.0.1"

    def admin(self, path: str, token: str | None = None):
        url = f"{self.admin_scheme}://{self.host}:{self.admin_port}{path}"
        req = urllib.request.Request(url)
        if token or self.admin_token:
            req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.admin_context) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> str:
        status, body = self.admin("/metrics")
        assert status == 200
        return body

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, then the exit code (the gateway must drain and exit 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


def start_gateway(upstream: str, logdir: Path, policies: Path | None = None, extra_args=(),
                  wait_ready: bool = True, rust_log: str | None = None, admin_scheme: str = "http",
                  admin_context=None, admin_token: str | None = None, host: str = "127.0.0.1",
                  port: int | None = None, admin_port: int | None = None) -> Gateway:
    binary = os.environ.get("MESHGATE_BIN") or str(ROOT / "target" / "debug" / "meshgate")
    if not Path(binary).exists():
        pytest.fail(f"{binary} not built: run `cargo build` first")
    port = port or port_block(300)
    admin_port = admin_port or port_block(1)
    if policies is None:
        policies = Path(tempfile.mkdtemp(prefix="policies-", dir=logdir))
    log = logdir / f"meshgate-{host}-{port}.log"
    env = dict(os.environ, RUST_LOG=rust_log or os.environ.get("RUST_LOG", "info,meshgate=debug"))
    proc = subprocess.Popen(
        [binary, "run", "--listen", f"{host}:{port}", "--admin", f"{host}:{admin_port}",
         "--upstream", upstream, "--policies", str(policies), *extra_args],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
    )
    gw = Gateway(port, admin_port, proc, log, policies, admin_scheme, admin_context, admin_token,
                 host)
    wait_for_port(port, host=host)
    wait_for_port(admin_port, host=host)
    if not wait_ready:
        return gw
    end = time.time() + 30
    while time.time() < end:
        if gw.admin("/readyz")[0] == 200:
            return gw
        time.sleep(0.2)
    raise TimeoutError("gateway never became ready:\n" + gw.log_text())


@pytest.fixture(scope="session")
def logdir(tmp_path_factory):
    d = Path(os.environ.get("E2E_LOG_DIR") or tmp_path_factory.mktemp("e2e-logs"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def broker(logdir):
    """The suite's upstream: one Apache Kafka node."""
    b = start_kafka(logdir, name="kafka-session")
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tansu(logdir):
    """tansu 0.6.0, for the tests that are about tansu as an upstream."""
    b = start_tansu(port_block(1), logdir)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def gateway(broker, logdir):
    gw = start_gateway(broker.bootstrap, logdir)
    yield gw
    code = gw.stop()
    assert code == 0, f"meshgate did not exit cleanly on SIGTERM ({code}):\n{gw.log_text()[-4000:]}"


@pytest.fixture
def topic():
    """A fresh topic name per test, following the example naming convention."""
    return f"e2e.t{uuid.uuid4().hex[:10]}.v1"
