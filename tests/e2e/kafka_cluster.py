"""Apache Kafka from the Maven Central jars that scripts/setup caches: a KRaft cluster of one or
three combined (broker + controller) nodes with a static quorum, for the end-to-end suite, the
benches and the quick start.

Each node serves four listeners, all on 127.0.0.1:
  PLAINTEXT       the default; inter-broker traffic
  SSL             with a PEM keystore (when the cluster is given a TLS identity)
  SASL_PLAINTEXT  PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, with the users in USERS
  SASL_SSL        the same mechanisms over TLS (with a TLS identity)

Storage is formatted with kafka.tools.StorageTool (SCRAM users added at format time), and each
node is started with kafka.Kafka on a small fixed heap sized for a 2-core machine. A node is ready
when its log says "Kafka Server started". Nodes are stopped by pid: SIGTERM for a controlled
shutdown, SIGKILL for a crash.

As a command (scripts/kafka wraps it):
  python3 tests/e2e/kafka_cluster.py start [--nodes 1|3] [--dir DIR] [--port P]   # prints the bootstrap
  python3 tests/e2e/kafka_cluster.py stop  [--dir DIR]
"""

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Users every SASL listener knows: (name, password).
USERS = [("alice", "alice-pw-3b7f"), ("bob", "bob-pw-91c2"), ("admin", "admin-pw-71aa")]


def kafka_version() -> str:
    pom = (ROOT / "tests" / "kafka" / "pom.xml").read_text()
    return re.search(r"<kafka.version>(.+?)</kafka.version>", pom).group(1)


def kafka_lib() -> Path:
    cache = Path(os.environ.get("MESHGATE_CACHE") or Path.home() / ".cache" / "meshgate")
    lib = cache / f"kafka-{kafka_version()}" / "lib"
    if not (lib / ".complete").exists():
        raise RuntimeError(f"Apache Kafka is not installed in {lib}: run scripts/setup kafka")
    return lib


def classpath() -> str:
    return str(kafka_lib() / "*")


def java() -> str:
    return os.environ.get("KAFKA_JAVA") or "java"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""


@dataclass
class Tls:
    """A PEM key store (PKCS#8 key, then the certificate chain) and a PEM trust store."""
    keystore: Path
    truststore: Path


@dataclass
class Node:
    node_id: int
    ports: dict
    dir: Path
    props: Path
    log: Path
    proc: subprocess.Popen | None = None
    # A broker-only node joins later; the first nodes are combined broker + controller nodes.
    controller: bool = True

    @property
    def plaintext(self) -> str:
        return f"127.0.0.1:{self.ports['PLAINTEXT']}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class KafkaCluster:
    dir: Path
    size: int = 1
    tls: Tls | None = None
    heap: str = "384m"
    nodes: list = field(default_factory=list)
    cluster_id: str = ""

    def __post_init__(self):
        self.dir = Path(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "log4j2.properties").write_text(LOG4J)
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        names = ["PLAINTEXT", "CONTROLLER", "SASL_PLAINTEXT"] + (["SSL", "SASL_SSL"] if self.tls else [])
        for i in range(self.size):
            ports = {name: free_port() for name in names}
            d = self.dir / f"node-{i + 1}"
            self.nodes.append(Node(i + 1, ports, d, self.dir / f"node-{i + 1}.properties",
                                   self.dir / f"node-{i + 1}.log"))
        for n in self.nodes:
            n.props.write_text(self._properties(n))

    # ---- configuration

    def _properties(self, n: Node) -> str:
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.ports['CONTROLLER']}"
                          for m in self.nodes if m.controller)
        listeners = ",".join(f"{name}://127.0.0.1:{port}" for name, port in n.ports.items()
                             if n.controller or name != "CONTROLLER")
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in n.ports.items()
                              if name != "CONTROLLER")
        rf = min(3, self.size)
        lines = [
            "process.roles=" + ("broker,controller" if n.controller else "broker"),
            f"node.id={n.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={n.dir}",
            "num.partitions=1",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={min(2, rf)}",
            "transaction.state.log.num.partitions=4",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={min(2, rf)}",
            "group.initial.rebalance.delay.ms=0",
            "log.segment.bytes=67108864",
            "log.retention.check.interval.ms=600000",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.replica.fetchers=1",
            "background.threads=2",
            "controlled.shutdown.enable=true",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        ]
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in USERS)
        for listener in ("sasl_plaintext", "sasl_ssl"):
            if listener == "sasl_ssl" and not self.tls:
                continue
            lines.append(f"listener.name.{listener}.plain.sasl.jaas.config="
                         "org.apache.kafka.common.security.plain.PlainLoginModule required "
                         f"{plain_users};")
            for mech in ("scram-sha-256", "scram-sha-512"):
                lines.append(f"listener.name.{listener}.{mech}.sasl.jaas.config="
                             "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        if self.tls:
            lines += [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={self.tls.keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={self.tls.truststore}",
                "ssl.client.auth=none",
            ]
        return "\n".join(lines) + "\n"

    def _java(self, main: str, *args: str, heap: str | None = None) -> list:
        h = heap or self.heap
        return [java(), f"-Xms{h}", f"-Xmx{h}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", classpath(), main, *args]

    # ---- life cycle

    def add_broker(self) -> Node:
        """Formats and starts a broker-only node that joins the running cluster."""
        node_id = max(n.node_id for n in self.nodes) + 1
        names = ["PLAINTEXT", "SASL_PLAINTEXT"] + (["SSL", "SASL_SSL"] if self.tls else [])
        n = Node(node_id, {name: free_port() for name in names}, self.dir / f"node-{node_id}",
                 self.dir / f"node-{node_id}.properties", self.dir / f"node-{node_id}.log",
                 controller=False)
        self.nodes.append(n)
        n.props.write_text(self._properties(n))
        self.format([n])
        self.start_node(n)
        return n

    def format(self, nodes=None):
        scram = []
        for user, password in USERS:
            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                scram += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        for n in nodes or self.nodes:
            out = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}",
                           "-c", str(n.props), "--ignore-formatted", *scram, heap="128m"),
                capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise RuntimeError(f"StorageTool format failed for node {n.node_id}:\n"
                                   f"{out.stdout}\n{out.stderr}")

    def start_node(self, n: Node, wait: bool = True, taskset: str | None = None):
        offset = n.log.stat().st_size if n.log.exists() else 0
        cmd = self._java("kafka.Kafka", str(n.props))
        if taskset:
            cmd = ["taskset", "-a", "-c", taskset, *cmd]
        n.proc = subprocess.Popen(cmd, stdout=open(n.log, "a"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        (self.dir / f"node-{n.node_id}.pid").write_text(str(n.proc.pid))
        if wait:
            self.wait_started(n, offset)

    def wait_started(self, n: Node, offset: int = 0, timeout: float = 120):
        end = time.time() + timeout
        while time.time() < end:
            if n.proc.poll() is not None:
                raise RuntimeError(f"Kafka node {n.node_id} exited ({n.proc.returncode}):\n"
                                   + n.log.read_text()[-4000:])
            with open(n.log, "rb") as f:
                f.seek(offset)
                if b"Kafka Server started" in f.read():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"Kafka node {n.node_id} did not start in {timeout}s:\n"
                           + n.log.read_text()[-4000:])

    def start(self, taskset: str | None = None):
        self.format()
        for n in self.nodes:
            self.start_node(n, wait=False, taskset=taskset)
        offsets = {n.node_id: 0 for n in self.nodes}
        for n in self.nodes:
            self.wait_started(n, offsets[n.node_id])
        return self

    def stop_node(self, n: Node, sig=signal.SIGTERM, timeout: float = 60):
        if not n.alive():
            return
        n.proc.send_signal(sig)
        try:
            n.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()

    def stop(self):
        for n in self.nodes:
            self.stop_node(n, signal.SIGTERM, timeout=30)

    # ---- addresses

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        return ",".join(f"127.0.0.1:{n.ports[listener]}" for n in self.nodes if listener in n.ports)

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def ports(self) -> set:
        return {p for n in self.nodes for p in n.ports.values()}


def main(argv):
    ap = argparse.ArgumentParser(prog="scripts/kafka", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="format fresh storage (DIR is wiped) and start a KRaft cluster")
    start.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    start.add_argument("--dir", default=str(Path.home() / ".cache" / "meshgate" / "cluster"))
    start.add_argument("--port", type=int, default=19092,
                       help="PLAINTEXT port of the first node (the quick start's upstream)")
    stop = sub.add_parser("stop", help="stop the nodes started in DIR, by pid")
    stop.add_argument("--dir", default=str(Path.home() / ".cache" / "meshgate" / "cluster"))
    args = ap.parse_args(argv)
    if args.cmd == "start":
        d = Path(args.dir)
        if any(d.glob("node-*.pid")):
            sys.exit(f"a cluster may still run from {d}: scripts/kafka stop --dir {d} first")
        # A local cluster for trying meshgate out: every start formats fresh storage (a cluster
        # id and listener ports of its own), so an earlier run's state never blocks it.
        shutil.rmtree(d, ignore_errors=True)
        cluster = KafkaCluster(d, size=args.nodes)
        # The first node takes the requested PLAINTEXT port.
        first = cluster.nodes[0]
        first.ports["PLAINTEXT"] = args.port
        for n in cluster.nodes:
            n.props.write_text(cluster._properties(n))
        cluster.start()
        print(cluster.bootstrap())
    else:
        d = Path(args.dir)
        for pidfile in sorted(d.glob("node-*.pid")):
            pid = int(pidfile.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(300):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            pidfile.unlink()


if __name__ == "__main__":
    main(sys.argv[1:])
