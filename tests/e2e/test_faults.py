"""Faults, end to end: the broker killed and restarted under an idempotent producer, clients that
vanish mid-request, a consumer too slow to read what it asked for, a connection flood past the
limit, and a policy set reloaded every second under traffic. Each test asserts what a user relies
on: nothing accepted is lost or duplicated, nothing rejected lands, and memory stays bounded."""

import json
import os
import signal
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from clients import consume, create_topic
from conftest import start_gateway, start_kafka


def metric(gw, name, **labels) -> float:
    total = 0.0
    for family in text_string_to_metric_families(gw.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def frame(api_key: int, version: int, correlation_id: int, body: bytes,
          client_id: bytes = b"fault") -> bytes:
    """A request frame with a v1 (non-flexible) header."""
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def test_broker_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(logdir, tmp_path):
    """acks=all and idempotence through meshgate while the broker is SIGKILLed and restarted on
    the same ports and log directory."""
    broker = start_kafka(logdir)
    node = broker.cluster.nodes[0]
    gw = start_gateway(broker.bootstrap, logdir)
    try:
        topic = f"e2e.crash{uuid.uuid4().hex[:8]}.v1"
        create_topic(gw.bootstrap, topic)
        p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5, "message.timeout.ms": 120_000})
        accepted, failed = [], []

        def on_delivery(err, msg):
            (failed if err else accepted).append(msg.value())

        values = [f"crash-{i}".encode() for i in range(4000)]
        killed = restarted = False
        for i, v in enumerate(values):
            p.produce(topic, v, on_delivery=on_delivery)
            p.poll(0)
            time.sleep(0.0015)
            if i == 1200 and not killed:
                broker.cluster.stop_node(node, signal.SIGKILL)
                killed = True
            if i == 2000 and not restarted:
                broker.cluster.start_node(node)
                restarted = True
        assert p.flush(120) == 0, "records never delivered"
        assert failed == [], f"{len(failed)} records failed"
        assert sorted(accepted) == sorted(values)
        got = consume(gw.bootstrap, [topic], len(values), timeout=90)
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
        assert sorted(got) == sorted(accepted), "the consumed set is the accepted set"
    finally:
        gw.stop()
        broker.stop()


def test_clients_vanishing_mid_request_harm_no_one(gateway, topic):
    create_topic(gateway.bootstrap, topic)
    truncated_before = metric(gateway, "meshgate_malformed_frames_total", reason="truncated")
    p = Producer({"bootstrap.servers": gateway.bootstrap, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 2})
    values = [f"steady-{i}".encode() for i in range(300)]
    for i, v in enumerate(values):
        p.produce(topic, v)
        if i % 10 == 0:
            # A client that sends part of a request and disconnects: a header claiming more
            # bytes than ever come, or half of a Metadata request.
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
                whole = frame(3, 1, i, struct.pack(">i", -1))
                s.sendall(whole[: len(whole) // 2] if i % 20 else struct.pack(">i", 4096) + b"x" * 100)
        p.poll(0)
    assert p.flush(30) == 0
    got = consume(gateway.bootstrap, [topic], len(values))
    assert sorted(got) == sorted(values)
    assert gateway.admin("/readyz")[0] == 200
    assert metric(gateway, "meshgate_malformed_frames_total", reason="truncated") >= truncated_before + 25


def fetch_v4(correlation_id: int, topic: str, partition: int, max_bytes: int) -> bytes:
    t = topic.encode()
    body = struct.pack(">iiiib", -1, 100, 1, max_bytes, 0)  # replica, wait, min, max, isolation
    body += struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, 0, max_bytes)
    return frame(1, 4, correlation_id, body)


def test_a_consumer_that_stops_reading_is_backpressured_and_memory_stays_bounded(gateway, topic):
    create_topic(gateway.bootstrap, topic, partitions=1)
    p = Producer({"bootstrap.servers": gateway.bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.size": 1_000_000})
    payload = b"z" * 1024
    for _ in range(40_000):  # about 40 MB
        p.produce(topic, payload)
        p.poll(0)
    assert p.flush(60) == 0
    base = rss_mb(gateway.proc.pid)
    # 200 pipelined fetches of up to 40 MB each, and never a byte read back.
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    requests = b"".join(fetch_v4(i, topic, 0, 40 * 1024 * 1024) for i in range(200))
    s.setblocking(False)
    sent = 0
    end = time.time() + 10
    while sent < len(requests) and time.time() < end:
        try:
            sent += s.send(requests[sent:])
        except BlockingIOError:
            time.sleep(0.05)
    peak = base
    for _ in range(20):
        time.sleep(0.25)
        peak = max(peak, rss_mb(gateway.proc.pid))
    s.close()
    print(f"meshgate RSS: {base:.0f} MB before, {peak:.0f} MB peak; {sent} request bytes sent")
    # Unbounded buffering would hold gigabytes (200 answers of up to 40 MB); meshgate holds at
    # most the frame it is writing plus the permits' bookkeeping.
    assert peak - base < 150, f"meshgate grew from {base:.0f} MB to {peak:.0f} MB"
    # And it still serves everyone else.
    assert gateway.admin("/readyz")[0] == 200
    got = consume(gateway.bootstrap, [topic], 40_000, timeout=90, settle=0.5)
    assert len(got) == 40_000


def test_a_connection_flood_past_the_limit_is_refused_cleanly(broker, logdir, tmp_path, topic):
    config = tmp_path / "gateway.yaml"
    config.write_text("max_connections: 8\n")
    gw = start_gateway(broker.bootstrap, logdir, extra_args=["--config", str(config)])
    try:
        refused_before = metric(gw, "meshgate_connections_refused_total")
        held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(8)]
        time.sleep(0.5)
        flood = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(40)]
        closed = 0
        for s in flood:
            s.settimeout(5)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, socket.timeout):
                closed += 1
            s.close()
        assert closed == 40, f"only {closed} of 40 excess connections were closed"
        assert metric(gw, "meshgate_connections_refused_total") >= refused_before + 40
        assert gw.proc.poll() is None
        for s in held:
            s.close()
        time.sleep(0.5)
        # Capacity is back once the holders leave.
        create_topic(gw.bootstrap, topic)
        p = Producer({"bootstrap.servers": gw.bootstrap})
        p.produce(topic, b"after the flood")
        assert p.flush(15) == 0
    finally:
        assert gw.stop() == 0


RELOADING = """
contract:
  name: reloading
  owner: t
  topic: {topic}
  quality:
    validity_rules: [{rule}]
"""


def test_policies_reloaded_every_second_under_traffic(broker, logdir, tmp_path):
    topic = f"e2e.reload{uuid.uuid4().hex[:8]}.v1"
    policies = tmp_path / "policies"
    policies.mkdir()
    target = policies / "reloading.yaml"
    variants = ["n >= 0", "n > -1", "NOT (n < 0)"]  # the same rule, written three ways
    target.write_text(RELOADING.format(topic=topic, rule=variants[0]))
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    stop = threading.Event()

    def rewrite():
        i = 0
        while not stop.is_set():
            i += 1
            tmp = policies / ".reloading.tmp"
            tmp.write_text(RELOADING.format(topic=topic, rule=variants[i % 3]))
            os.replace(tmp, target)  # an atomic save, as editors and ConfigMaps do
            stop.wait(1.0)

    try:
        create_topic(gw.bootstrap, topic)
        reloads_before = metric(gw, "meshgate_policy_reloads_total", outcome="ok")
        rewriter = threading.Thread(target=rewrite, daemon=True)
        rewriter.start()
        p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "linger.ms": 5,
                      "enable.idempotence": False, "retries": 0})
        accepted, rejected = [], []

        def on_delivery(err, msg):
            (rejected if err else accepted).append(msg.value())

        sent_valid, sent_invalid = [], []
        end = time.time() + 8
        i = 0
        while time.time() < end:
            n = -i if i % 10 == 9 else i
            v = json.dumps({"n": n, "i": i}).encode()
            (sent_invalid if n < 0 else sent_valid).append(v)
            p.produce(topic, v, on_delivery=on_delivery)
            # One record per request, so that an invalid record fails only itself.
            p.flush(10)
            i += 1
        stop.set()
        rewriter.join()
        assert sorted(accepted) == sorted(sent_valid)
        assert sorted(rejected) == sorted(sent_invalid)
        got = consume(gw.bootstrap, [topic], len(sent_valid))
        assert sorted(got) == sorted(sent_valid)
        assert metric(gw, "meshgate_policy_reloads_total", outcome="ok") >= reloads_before + 5
        assert metric(gw, "meshgate_policy_reloads_total", outcome="error") == 0
    finally:
        stop.set()
        assert gw.stop() == 0
