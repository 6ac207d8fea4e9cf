"""The cluster scenarios a proxy gets wrong, on three Apache Kafka nodes (replication factor 3,
min.insync.replicas 2), under an idempotent acks=all producer and a consumer group, both through
meshgate: the leader of a partition killed with SIGKILL and brought back, and a broker shut down
with SIGTERM and restarted. Clients must follow the new leaders through meshgate's ports, and
every record must be consumed exactly once.
"""

import json
import signal
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import start_gateway, start_kafka
from kafka_cluster import free_port


@pytest.fixture(scope="module")
def cluster(logdir):
    broker = start_kafka(logdir, nodes=3, name=f"kafka-3-{uuid.uuid4().hex[:6]}")
    yield broker
    broker.stop()


def leader_of(bootstrap, topic, partition=0) -> int:
    """The partition's leader, or -1 while the broker asked does not know it yet (a new topic's
    partitions reach each broker's metadata a moment after its creation)."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    p = t.partitions.get(partition) if t is not None else None
    return p.leader if p is not None else -1


def wait_for_leader(bootstrap, topic, partition=0, timeout=30.0) -> int:
    end = time.time() + timeout
    while time.time() < end:
        leader = leader_of(bootstrap, topic, partition)
        if leader >= 0:
            return leader
        time.sleep(0.2)
    raise TimeoutError(f"{topic}-{partition} has no leader after {timeout} s")


def produce_through_faults(gw, topic, count, fault, value=lambda topic, i: f"{topic}-{i}"):
    """Produces at a steady pace, starting `fault()` after the first third of `count` records and
    going on until it has finished (and at least `count` records); returns (values sent,
    accepted, failed)."""
    p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "message.timeout.ms": 120_000})
    accepted, failed = [], []

    def on_delivery(err, msg):
        (failed if err else accepted).append(msg.value())

    values = []
    worker = None
    i = 0
    while i < count or (worker is not None and worker.is_alive() and i < 50 * count):
        v = value(topic, i).encode()
        values.append(v)
        p.produce(topic, v, on_delivery=on_delivery)
        p.poll(0)
        time.sleep(0.003)
        if i == count // 3:
            worker = threading.Thread(target=fault)
            worker.start()
        i += 1
    assert p.flush(150) == 0, "records never delivered"
    worker.join()
    return values, accepted, failed


def consume_all(bootstrap, topic, expected, group):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    end = time.time() + 90
    settle = None
    try:
        while time.time() < end:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
                c.commit(m, asynchronous=False)
            if len(got) >= expected and settle is None:
                settle = time.time() + 3
            if settle and time.time() > settle:
                break
    finally:
        c.close()
    return got


@pytest.mark.parametrize("how", ["leader SIGKILL", "controlled shutdown", "rolling restart"])
def test_clients_follow_leadership_through_meshgate_with_exact_accounting(cluster, logdir, how):
    gw = start_gateway(cluster.bootstrap, logdir)
    try:
        topic = f"e2e.cluster{uuid.uuid4().hex[:8]}.v1"
        admin = AdminClient({"bootstrap.servers": gw.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[
            topic].result(30)
        victim = cluster.cluster.node(wait_for_leader(cluster.bootstrap, topic))
        sig = signal.SIGKILL if how == "leader SIGKILL" else signal.SIGTERM

        moved = []

        def fault():
            if how == "rolling restart":
                # Every node in turn, the partition's leader last; each back before the next.
                order = sorted(cluster.cluster.nodes, key=lambda n: n is victim)
                for n in order:
                    if not n.controller:
                        continue
                    cluster.cluster.stop_node(n, signal.SIGTERM)
                    if n is victim:
                        moved.append("rolled")
                    time.sleep(1)
                    cluster.cluster.start_node(n)
                return
            cluster.cluster.stop_node(victim, sig)
            # Wait until the cluster has given the partition another leader.
            survivors = ",".join(n.plaintext for n in cluster.cluster.nodes if n is not victim)
            end = time.time() + 30
            while time.time() < end:
                leader = leader_of(survivors, topic)
                if leader not in (-1, victim.node_id):
                    moved.append(leader)
                    break
                time.sleep(0.2)
            time.sleep(2)
            cluster.cluster.start_node(victim)

        values, accepted, failed = produce_through_faults(gw, topic, 3000, fault)
        assert moved, "leadership never moved: the scenario did not happen"
        assert failed == [], f"{len(failed)} records failed"
        assert sorted(accepted) == sorted(values)
        # The victim is back and served: its partitions have a leader again through meshgate.
        assert victim.alive()
        got = consume_all(gw.bootstrap, topic, len(values), group=f"g-{uuid.uuid4().hex[:6]}")
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
        assert sorted(got) == sorted(values), "every record exactly once"
        # Only gateway addresses were handed out, for every node.
        md = AdminClient({"bootstrap.servers": gw.bootstrap}).list_topics(timeout=10)
        assert len(md.brokers) == 3
        assert all(gw.port <= b.port < gw.port + 300 for b in md.brokers.values())
    finally:
        assert gw.stop() == 0


def produce_and_read_back(gw, topic, prefix, count=200):
    values = [f"{prefix}-{i}".encode() for i in range(count)]
    p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": True})
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0
    got = consume_all(gw.bootstrap, topic, len(values), group=f"g-{uuid.uuid4().hex[:6]}")
    assert sorted(got) == sorted(values), "every record exactly once"


def test_bootstrap_with_the_first_upstream_address_down(cluster, logdir):
    dead = free_port()
    gw = start_gateway(f"127.0.0.1:{dead},{cluster.bootstrap}", logdir)
    try:
        topic = f"e2e.boot{uuid.uuid4().hex[:8]}.v1"
        admin = AdminClient({"bootstrap.servers": gw.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
        produce_and_read_back(gw, topic, "boot")
        assert gw.admin("/readyz")[0] == 200
    finally:
        assert gw.stop() == 0


def test_a_broker_added_to_the_running_cluster_is_served_without_a_restart(cluster, logdir):
    """A fourth (broker-only) node joins; meshgate serves its port without a restart, and once a
    partition is reassigned to it, clients produce to and consume from it through meshgate."""
    from test_client_matrix import run_client
    gw = start_gateway(cluster.bootstrap, logdir)
    try:
        topic = f"e2e.grow{uuid.uuid4().hex[:8]}.v1"
        admin = AdminClient({"bootstrap.servers": gw.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
        new = cluster.cluster.add_broker()
        moved = run_client("java", "reassign", gw.bootstrap, topic, "0", f"{new.node_id},1,2")
        assert moved["leader"] == new.node_id, moved
        port = int(moved["leader_address"].rsplit(":", 1)[1])
        assert port == gw.broker_port_base + new.node_id, "the new broker's gateway port"
        produce_and_read_back(gw, topic, "grow")
        assert f"node_id={new.node_id}" in gw.log_text() and "serving broker" in gw.log_text()
    finally:
        assert gw.stop() == 0


HAPROXY_CFG = """
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 10m
  timeout server 10m
  retries 3
  option redispatch
frontend kafka
  bind 127.0.0.1:{first}-{last}
  default_backend gateways
backend gateways
  balance leastconn
  # No port on a server: HAProxy connects to the port the client connected to, so each broker's
  # gateway port on the load balancer leads to the same broker's port on a gateway.
  server a {host_a} check port {port} inter 500ms fall 2 rise 2
  server b {host_b} check port {port} inter 500ms fall 2 rise 2
"""

AVRO_CONTRACT = """
contract:
  name: lb-avro
  owner: lb-team
  topic: e2e.lbavro.v1
  schema: {{ format: avro, file: schemas/order-events-v1.avsc }}
---
contract:
  name: lb-load
  owner: lb-team
  topic: {topic}
"""


def test_two_gateways_behind_haproxy_survive_losing_one_under_load(cluster, logdir):
    """Two meshgate instances in front of the same cluster, behind HAProxy, as on two machines:
    each listens on its own loopback address with the same ports, and advertises the load
    balancer's address. Clients bootstrap through HAProxy; one gateway is killed (SIGKILL) under
    an idempotent producer, and every record is consumed exactly once through the other. Both
    report the same policy content hash and the same schema registry ids."""
    import shutil
    import subprocess
    from http.client import HTTPConnection

    from conftest import ROOT, port_block, wait_for_port
    if not shutil.which("haproxy"):
        pytest.fail("haproxy is not installed: run scripts/setup debian")
    run = uuid.uuid4().hex[:8]
    topic = f"e2e.lb{run}.v1"
    port, admin_port = port_block(300), port_block(1)
    gateways = []
    for host in ("127.0.0.2", "127.0.0.3"):
        policies = logdir / f"policies-lb-{host}-{run}"
        shutil.copytree(ROOT / "policies", policies)
        (policies / "contracts" / "lb.yaml").write_text(AVRO_CONTRACT.format(topic=topic))
        gateways.append(start_gateway(
            cluster.bootstrap, logdir, policies=policies, host=host, port=port,
            admin_port=admin_port, extra_args=["--advertised-host", "127.0.0.1"]))
    cfg = logdir / f"haproxy-{run}.cfg"
    cfg.write_text(HAPROXY_CFG.format(first=port, last=port + 9, host_a="127.0.0.2",
                                      host_b="127.0.0.3", port=port))
    lb = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=open(f"{cfg}.log", "w"),
                          stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)

        class Balanced:
            bootstrap = f"127.0.0.1:{port}"

        # The same policies, whatever their directory, and the same registry ids.
        def facts(gw):
            ready = gw.admin("/readyz")[1]
            c = HTTPConnection(gw.host, gw.admin_port, timeout=5)
            c.request("GET", "/registry/subjects/e2e.lbavro.v1-value/versions/latest")
            latest = json.loads(c.getresponse().read())
            return ready.split("(")[1].split(")")[0], latest["id"]
        a, b = (facts(gw) for gw in gateways)
        assert a == b and a[0].startswith("sha256 "), (a, b)

        admin = AdminClient({"bootstrap.servers": Balanced.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
        md = admin.list_topics(topic, timeout=10)
        assert {(b.host, b.port) for b in md.brokers.values()} == \
            {("127.0.0.1", port + 1 + n.node_id) for n in cluster.cluster.nodes}, \
            "every broker address is the load balancer's"

        killed = []

        def fault():
            # The victim is carrying client connections when it dies: clients must move.
            active = [line for line in gateways[0].metrics().splitlines()
                      if line.startswith("meshgate_connections_active")]
            gateways[0].proc.kill()
            gateways[0].proc.wait()
            killed.append(sum(float(line.split()[-1]) for line in active))

        values, accepted, failed = produce_through_faults(
            Balanced, topic, 3000, fault, value=lambda t, i: json.dumps({"id": f"{t}-{i}"}))
        assert killed and killed[0] > 0, f"the killed gateway served no client: {killed}"
        assert failed == [], f"{len(failed)} records failed"
        assert sorted(accepted) == sorted(values)
        got = consume_all(Balanced.bootstrap, topic, len(values), group=f"g-{run}")
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
        assert sorted(got) == sorted(values), "every record exactly once"
    finally:
        lb.terminate()
        lb.wait(10)
        for gw in gateways:
            gw.stop()
