#!/usr/bin/env python3
"""End-to-end bench: direct-to-broker vs through meshgate (and tansu's own proxy as a peer),
in one run, pinned and alternated as ../shared/docs/BENCHMARKING.md describes.

  the broker (Apache Kafka, or tansu) + the producer: core 0 (`taskset`, inherited by threads)
  meshgate / tansu proxy: core 1

--upstream kafka runs one Apache Kafka KRaft node (the jars scripts/setup caches) as the broker,
with its own TLS listener for the TLS arms; --upstream tansu (the default) runs tansu 0.6.0, with
stunnel in front for TLS.

Arms alternate for --pairs rounds, in reverse order on odd rounds (direct, meshgate | meshgate,
direct | ...); ratios are taken per round against that round's direct arm and the median is
reported. Each arm gets a fresh topic.

Usage:
  cargo build --release
  python3 benches/e2e.py --size 1024 --records 200000 --pairs 3 --out bench-results/e2e-1k.md
  python3 benches/e2e.py --upstream kafka --arms direct,meshgate,meshgate-contract,meshgate-avro \
      --out bench-results/kafka-1k.md
"""

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import port_block, wait_for_port  # noqa: E402
from clients import create_topic  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402


def delete_topic(bootstrap, topic, conf=None):
    """tansu keeps topics in memory: drop each arm's data so later rounds run on the same
    footing as earlier ones."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(conf or {})})  # must outlive the future
    try:
        admin.delete_topics([topic])[topic].result(30)
    except Exception as e:  # a failed delete only costs memory
        print(f"warning: could not delete {topic}: {e}", file=sys.stderr)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(cmd, core, log):
    return subprocess.Popen(["taskset", "-c", str(core), *cmd], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def run_consumer(bootstrap, topic, records, conf=None, passes=1):
    cmd = ["taskset", "-c", "0", sys.executable, str(ROOT / "benches" / "consumer.py"),
           "--bootstrap", bootstrap, "--topic", topic, "--records", str(records),
           "--conf-json", json.dumps(conf or {}), "--passes", str(passes)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["records"] < records * passes:
        raise RuntimeError(f"consumed {result['records']} of {records * passes}")
    return result


def run_producer(bootstrap, topic, args, mode, rate=None, value_file=None, conf=None):
    conf = {**json.loads(args.producer_conf), **(conf or {})}
    cmd = ["taskset", "-c", "0", sys.executable, str(ROOT / "benches" / "producer.py"),
           "--bootstrap", bootstrap, "--topic", topic, "--size", str(args.size), "--mode", mode,
           "--records", str(args.records), "--conf-json", json.dumps(conf)]
    if rate:
        cmd += ["--rate", str(rate), "--seconds", str(args.rate_seconds)]
    if value_file or args.value_file:
        cmd += ["--value-file", value_file or args.value_file]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] or result["undelivered"]:
        raise RuntimeError(f"delivery failures: {result}")
    return result


def write_json_orders(path: Path, size: int):
    """64 JSON order records padded to about `size` bytes, one per line: the payloads of every
    JSON-contract arm (and of benches/kafka_perf.py)."""
    with open(path, "w") as f:
        for i in range(64):
            base = {"order_id": f"o-{i:08}", "customer_id": f"c-{i:05}", "order_total": 10.5 + i,
                    "currency": "EUR", "status": "PAID", "item_count": 1 + i % 7, "channel": "web",
                    "placed_at": 1764000000000 + i, "coupon": None, "shipping_country": "FR"}
            base["comment"] = "x" * max(0, size - len(json.dumps(base)) - 16)
            f.write(json.dumps(base) + "\n")


def make_pki(logdir: Path) -> dict:
    """A CA, a broker certificate (PEM, and Kafka's PEM key store: PKCS#8 key then chain) and a
    gateway certificate."""
    import trustme
    from cryptography.hazmat.primitives import serialization
    ca = trustme.CA()
    out = {"ca": logdir / "ca.pem"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    for name in ["broker", "gateway"]:
        issued = ca.issue_cert("127.0.0.1", "localhost")
        out[name] = (logdir / f"{name}.pem", logdir / f"{name}.key")
        out[name][0].write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(out[name][1]))
    key = serialization.load_pem_private_key(out["broker"][1].read_bytes(), None)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    out["keystore"] = logdir / "broker-keystore.pem"
    out["keystore"].write_bytes(pkcs8 + out["broker"][0].read_bytes())
    return out


def json_contract_policies(kind: str, pairs: int, schema_extra: str = "", extra: str = ""):
    """A policy directory with the JSON order contract (the example schema and the seed's two
    rules) on one topic per round, `bench.<kind><round>.v1`; `schema_extra` goes into its
    `schema:` mapping and `extra` after its rules. Returns the directory and the topics."""
    policies = Path(tempfile.mkdtemp(prefix=f"{kind}-policies-"))
    (policies / "schemas").mkdir()
    (policies / "schemas" / "order.avsc").write_text(
        (ROOT / "policies" / "contracts" / "schemas" / "order-events-v1.avsc").read_text())
    topics, docs = [], []
    for i in range(pairs):
        t = f"bench.{kind}{i}.v1"
        topics.append(t)
        docs.append(f"contract:\n  name: bench-{kind}-{i}\n  owner: bench\n  topic: {t}\n"
                    f"  schema: {{ format: json, file: schemas/order.avsc{schema_extra} }}\n"
                    f"  quality:\n    validity_rules: [order_total > 0, customer_id is not null]\n"
                    f"{extra}")
    (policies / "contracts.yaml").write_text("---\n".join(docs))
    return policies, topics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--consume-passes", type=int, default=1,
                    help="read the produced records back this many times in the consume phase "
                         "(a longer, steadier measurement)")
    ap.add_argument("--rate-seconds", type=float, default=8)
    ap.add_argument("--rate", type=float, default=0,
                    help="fixed offered load for the latency runs (default: 50%% of direct saturation)")
    ap.add_argument("--arms", default="direct,meshgate,tansu-proxy",
                    help="any of direct, meshgate, meshgate-contract, meshgate-avro, meshgate-reads, meshgate-zone, "
                         "meshgate-pii, meshgate-pii-other, direct-tls, meshgate-tls, tansu-proxy")
    ap.add_argument("--policies", help="policy dir for the meshgate arm (default: none)")
    ap.add_argument("--topic-prefix", default="bench.load")
    ap.add_argument("--value-file", help="payloads, one per line (for contract arms)")
    ap.add_argument("--meshgate", default=str(ROOT / "target" / "release" / "meshgate"))
    ap.add_argument("--baseline-meshgate",
                    help="another meshgate binary (before a change), run as meshgate-baseline beside the "
                         "meshgate arm and as meshgate-contract-baseline beside meshgate-contract")
    ap.add_argument("--producer-conf", default="{}",
                    help="librdkafka settings for every arm's producer, as a JSON object; e.g. "
                         "'{\"batch.size\": 900000}' for meshgate-pii, whose sealed batches grow "
                         "past a default 1 MB batch's room under Kafka's max.message.bytes")
    ap.add_argument("--out", help="write the markdown table here too")
    ap.add_argument("--upstream", choices=["tansu", "kafka"], default="tansu")
    args = ap.parse_args()
    arms = args.arms.split(",")
    if args.baseline_meshgate:
        for arm, twin in [("meshgate", "meshgate-baseline"), ("meshgate-contract", "meshgate-contract-baseline")]:
            if arm in arms and twin not in arms:
                arms.append(twin)

    logdir = Path(tempfile.mkdtemp(prefix="bench-"))
    procs = {}
    tls_arms = "direct-tls" in arms or "meshgate-tls" in arms
    pki = make_pki(logdir) if tls_arms else None
    kafka = None
    if args.upstream == "kafka":
        if "tansu-proxy" in arms:
            arms.remove("tansu-proxy")  # tansu's proxy fronts tansu only
        from kafka_cluster import KafkaCluster, Tls
        kafka = KafkaCluster(logdir / "kafka", size=1,
                             tls=Tls(pki["keystore"], pki["ca"]) if pki else None)
        kafka.start(taskset="0")
        direct = kafka.bootstrap()
        broker_pids = {"plain": [kafka.nodes[0].proc.pid], "tls": [kafka.nodes[0].proc.pid]}
    else:
        broker_port = port_block(1)
        url = f"tcp://127.0.0.1:{broker_port}"
        procs["tansu"] = start(["tansu", "broker", "--listener-url", url, "--advertised-listener-url", url,
                                "--storage-engine", "memory://tansu/"], 0, logdir / "tansu.log")
        wait_for_port(broker_port)
        direct = f"127.0.0.1:{broker_port}"
        broker_pids = {"plain": [procs["tansu"].pid]}
    bootstrap = {"direct": direct}

    def start_meshgate(arm, binary, policies, upstream=direct, extra=()):
        """Starts a meshgate for `arm` on core 1; returns its admin address."""
        port, admin = port_block(300), port_block(1)
        procs[arm] = start([binary, "run", "--listen", f"127.0.0.1:{port}",
                            "--admin", f"127.0.0.1:{admin}", "--upstream", upstream,
                            "--policies", str(policies), *extra], 1, logdir / f"{arm}.log")
        wait_for_port(port)
        bootstrap[arm] = f"127.0.0.1:{port}"
        return admin

    for arm, binary in [("meshgate", args.meshgate), ("meshgate-baseline", args.baseline_meshgate)]:
        if arm not in arms:
            continue
        start_meshgate(arm, binary, args.policies or tempfile.mkdtemp(prefix="nopolicies-"))
    contract_topics = []
    if "meshgate-contract" in arms or "meshgate-contract-baseline" in arms:
        # A JSON contract (the example schema and the seed's two rules) on a pool of topics, one
        # per round, and JSON order values for every arm so that all arms carry the same bytes.
        policies, contract_topics = json_contract_policies("contract", args.pairs)
        for arm, binary in [("meshgate-contract", args.meshgate),
                            ("meshgate-contract-baseline", args.baseline_meshgate)]:
            if arm not in arms:
                continue
            start_meshgate(arm, binary, policies)
        if not args.value_file:
            args.value_file = str(logdir / "orders.jsonl")
            write_json_orders(Path(args.value_file), args.size)
    reads_topics = []
    if "meshgate-reads" in arms:
        # Read access on: a contract per round's topic admitting the bench's (anonymous)
        # principal and any group, so every Fetch, ListOffsets, OffsetFetch and OffsetCommit is
        # decoded and judged, and none is refused.
        policies = Path(tempfile.mkdtemp(prefix="reads-policies-"))
        docs = []
        for i in range(args.pairs):
            t = f"bench.reads{i}.v1"
            reads_topics.append(t)
            docs.append(f"contract:\n  name: bench-reads-{i}\n  owner: bench\n  topic: {t}\n"
                        "  consumers: [User:ANONYMOUS, Group:bench*, Group:g-*]\n")
        (policies / "contracts.yaml").write_text("---\n".join(docs))
        start_meshgate("meshgate-reads", args.meshgate, policies)
        # A contract's values are JSON (its default format): every arm sends the JSON orders.
        if not args.value_file:
            args.value_file = str(logdir / "orders.jsonl")
            write_json_orders(Path(args.value_file), args.size)
    zone_topics = []
    zone_bootstrap = None
    if "meshgate-zone" in arms:
        # A partner zone sharing each round's topic under an alias (`partner.zoneN`): the arm
        # produces through the gateway's own listener and consumes through the zone's, by alias,
        # with a consumer group (prefixed on the cluster).
        policies = Path(tempfile.mkdtemp(prefix="zone-policies-"))
        zone_port = port_block(300)
        shares = []
        for i in range(args.pairs):
            t = f"bench.zone{i}.v1"
            zone_topics.append(t)
            shares.append(f"    - {{topic: {t}, as: partner.zone{i}}}\n")
        (policies / "zone.yaml").write_text(
            f"zone:\n  name: bench\n  listen: 127.0.0.1:{zone_port}\n"
            f"  principals: [User:ANONYMOUS]\n  shares:\n{''.join(shares)}")
        start_meshgate("meshgate-zone", args.meshgate, policies)
        wait_for_port(zone_port)
        zone_bootstrap = f"127.0.0.1:{zone_port}"
    pii_topics = []
    if "meshgate-pii" in arms or "meshgate-pii-other" in arms:
        # Field protection: the JSON contract of meshgate-contract with `customer_id` classified
        # pii and encrypted, read back by a pii reader (the bench's anonymous principal), so the
        # produce phase seals one field per record and the consume phase opens it.
        # meshgate-pii-other is the same gateway process, on topics without a contract: what an
        # unprotected topic costs beside protected ones.
        policies, pii_topics = json_contract_policies(
            "pii", args.pairs, schema_extra=", classification: {customer_id: pii}",
            extra="  protect: {pii: encrypt}\n  pii_readers: [User:ANONYMOUS]\n")
        (logdir / "kek").write_text(base64.b64encode(os.urandom(32)).decode())
        config = logdir / "pii-gateway.yaml"
        config.write_text(f"protect:\n  key_dir: {logdir / 'keys'}\n"
                          f"  kms: {{local_file: {logdir / 'kek'}}}\n")
        start_meshgate("meshgate-pii", args.meshgate, policies, extra=("--config", str(config)))
        if "meshgate-pii-other" in arms:
            bootstrap["meshgate-pii-other"] = bootstrap["meshgate-pii"]
            procs["meshgate-pii-other"] = procs["meshgate-pii"]
        if not args.value_file:
            args.value_file = str(logdir / "orders.jsonl")
            write_json_orders(Path(args.value_file), args.size)
    avro_topics = []
    if "meshgate-avro" in arms:
        # An Avro contract (order fields + padding to about --size bytes, three rules) on a pool
        # of topics; values are Confluent-framed with the id meshgate's own registry serves.
        import io
        import urllib.request
        import fastavro
        schema = json.loads((ROOT / "policies" / "contracts" / "schemas" / "order-events-v1.avsc").read_text())
        schema["fields"].append({"name": "comment", "type": "string", "default": ""})
        policies = Path(tempfile.mkdtemp(prefix="avro-policies-"))
        (policies / "order.avsc").write_text(json.dumps(schema))
        docs = []
        for i in range(args.pairs):
            t = f"bench.avro{i}.v1"
            avro_topics.append(t)
            docs.append(f"contract:\n  name: bench-avro-{i}\n  owner: bench\n  topic: {t}\n"
                        f"  schema: {{ format: avro, file: order.avsc }}\n  quality:\n    validity_rules:\n"
                        f"      - order_total > 0\n      - customer_id is not null\n"
                        f"      - \"status IN ('PAID', 'PLACED')\"\n")
        (policies / "contracts.yaml").write_text("---\n".join(docs))
        admin = start_meshgate("meshgate-avro", args.meshgate, policies)
        wait_for_port(admin)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/registry/subjects/{avro_topics[0]}-value/versions/latest") as r:
            schema_id = json.loads(r.read())["id"]
        parsed = fastavro.parse_schema(schema)
        avro_values = logdir / "orders-avro.b64"
        with open(avro_values, "w") as f:
            for i in range(64):
                rec = {"order_id": f"o-{i:08}", "customer_id": f"c-{i:05}", "order_total": 10.5 + i,
                       "currency": "EUR", "status": "PAID", "item_count": 1 + i % 7, "channel": "web",
                       "placed_at": 1764000000000 + i, "coupon": None, "shipping_country": "FR", "comment": ""}
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, parsed, rec)
                rec["comment"] = "x" * max(0, args.size - 5 - len(buf.getvalue()) - 2)
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, parsed, rec)
                framed = b"\x00" + schema_id.to_bytes(4, "big") + buf.getvalue()
                f.write(base64.b64encode(framed).decode() + "\n")
    client_conf = {}
    admin_at = {}
    if tls_arms:
        tls_conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki["ca"])}
        if kafka:
            # Kafka serves TLS itself: direct-tls is librdkafka over TLS to its SSL listener,
            # meshgate-tls is TLS to meshgate and meshgate over TLS to that listener.
            tls_bootstrap = kafka.bootstrap("SSL")
        else:
            # A second tansu (core 0) behind stunnel (core 0), advertising stunnel's port. tansu
            # 0.6.0 cannot serve TLS itself (see ARCHITECTURE.md).
            plain, tls = port_block(1), port_block(1)
            procs["tansu-tls"] = start(["tansu", "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
                                        "--advertised-listener-url", f"tcp://127.0.0.1:{tls}",
                                        "--storage-engine", "memory://tansu/"], 0, logdir / "tansu-tls.log")
            wait_for_port(plain)
            conf_path = logdir / "stunnel.conf"
            conf_path.write_text(f"foreground = yes\npid =\nsyslog = no\n[kafka]\naccept = 127.0.0.1:{tls}\n"
                                 f"connect = 127.0.0.1:{plain}\ncert = {pki['broker'][0]}\nkey = {pki['broker'][1]}\n")
            procs["stunnel"] = start(["stunnel4", str(conf_path)], 0, logdir / "stunnel.log")
            wait_for_port(tls)
            tls_bootstrap = f"127.0.0.1:{tls}"
            broker_pids["tls"] = [procs["tansu-tls"].pid, procs["stunnel"].pid]
        bootstrap["direct-tls"] = tls_bootstrap
        client_conf["direct-tls"] = client_conf["meshgate-tls"] = tls_conf
        admin_at["direct-tls"] = admin_at["meshgate-tls"] = (tls_bootstrap, tls_conf)
        if "meshgate-tls" in arms:
            start_meshgate("meshgate-tls", args.meshgate, tempfile.mkdtemp(prefix="nopolicies-"),
                           upstream=tls_bootstrap,
                           extra=["--tls-cert", str(pki["gateway"][0]), "--tls-key", str(pki["gateway"][1]),
                                  "--upstream-tls", "--upstream-ca", str(pki["ca"])])
    if "tansu-proxy" in arms:
        port = port_block(1)
        purl = f"tcp://127.0.0.1:{port}"
        procs["tansu-proxy"] = start(["tansu", "proxy", "--listener-url", purl,
                                      "--advertised-listener-url", purl, "--origin-url", f"tcp://{direct}"],
                                     1, logdir / "tansu-proxy.log")
        wait_for_port(port)
        bootstrap["tansu-proxy"] = f"127.0.0.1:{port}"
    time.sleep(2)

    def topic_for(arm, rnd):
        """A fresh topic per arm; contract arms take their round's topic from the contract pool."""
        if arm.startswith("meshgate-contract"):
            return contract_topics[rnd]
        if arm == "meshgate-avro":
            return avro_topics[rnd]
        if arm == "meshgate-reads":
            return reads_topics[rnd]
        if arm == "meshgate-zone":
            return zone_topics[rnd]
        if arm == "meshgate-pii":
            return pii_topics[rnd]
        return f"{args.topic_prefix}-{uuid.uuid4().hex[:8]}.v1"

    # Warm-up, unmeasured: the first run against a fresh broker is slow (page faults, JIT-free
    # but cold allocator and caches) and would skew round 0's ratios.
    warm = f"{args.topic_prefix}-warmup.v1"
    create_topic(direct, warm, partitions=3)
    run_producer(direct, warm, argparse.Namespace(**{**vars(args), "records": min(args.records, 100_000)}),
                 "saturate")
    delete_topic(direct, warm)

    sat = {a: [] for a in arms}
    cons = {a: [] for a in arms}
    cons_cpu = {a: [] for a in arms}  # proxy CPU s/GB over the consume phase
    lat = {a: [] for a in arms}
    cpu = {a: [] for a in arms}
    core0 = {a: [] for a in arms}  # broker + producer CPU s/GB: what the arm costs the broker's core
    try:
        for rnd in range(args.pairs):
            # Odd rounds run the arms in reverse (ABBA), so no arm always follows the same one:
            # a broker slowed by the previous arm's data weighs on every arm alike.
            order = arms if rnd % 2 == 0 else arms[::-1]
            for arm in order:
                topic = topic_for(arm, rnd)
                admin_bootstrap, admin_conf = admin_at.get(arm, (direct, None))
                create_topic(admin_bootstrap, topic, partitions=3, conf=admin_conf)
                pid = procs[arm].pid if arm in procs else None
                c0 = cpu_seconds(pid) if pid else None
                # The broker side on core 0: the broker, and for tansu's TLS arms the stunnel in
                # front of it.
                broker = broker_pids["tls" if arm in ("direct-tls", "meshgate-tls") else "plain"]
                b0 = sum(cpu_seconds(b) for b in broker)
                vf = str(logdir / "orders-avro.b64") if arm == "meshgate-avro" else None
                r = run_producer(bootstrap[arm], topic, args, "saturate", value_file=vf,
                                 conf=client_conf.get(arm))
                if pid:
                    cpu[arm].append((cpu_seconds(pid) - c0) / (r["bytes"] / 1e9))
                core0[arm].append((sum(cpu_seconds(b) for b in broker) - b0 + r["cpu_s"]) / (r["bytes"] / 1e9))
                sat[arm].append(r)
                k0 = cpu_seconds(pid) if pid else None
                if arm == "meshgate-zone":
                    # The partner's read: the zone's listener, the alias.
                    cr = run_consumer(zone_bootstrap, f"partner.zone{rnd}", args.records,
                                      passes=args.consume_passes)
                else:
                    cr = run_consumer(bootstrap[arm], topic, args.records, conf=client_conf.get(arm),
                                      passes=args.consume_passes)
                if pid:
                    cons_cpu[arm].append((cpu_seconds(pid) - k0) / (cr["bytes"] / 1e9))
                cons[arm].append(cr)
                delete_topic(admin_bootstrap, topic, admin_conf)
                print(f"round {rnd} {arm:12} saturate {r['records_per_s']:>9.0f} rec/s "
                      f"{r['mb_per_s']:6.1f} MB/s; consume {cr['records_per_s']:>9.0f} rec/s",
                      flush=True)
            rate = args.rate or (0.5 * sat["direct"][-1]["records_per_s"] if "direct" in sat else 10_000)
            for arm in order:
                topic = topic_for(arm, rnd)
                admin_bootstrap, admin_conf = admin_at.get(arm, (direct, None))
                create_topic(admin_bootstrap, topic, partitions=3, conf=admin_conf)
                vf = str(logdir / "orders-avro.b64") if arm == "meshgate-avro" else None
                r = run_producer(bootstrap[arm], topic, args, "rate", rate=int(rate), value_file=vf,
                                 conf=client_conf.get(arm))
                lat[arm].append(r)
                delete_topic(admin_bootstrap, topic, admin_conf)
                print(f"round {rnd} {arm:12} @{int(rate)}/s p50 {r['p50_ms']:.2f} ms "
                      f"p99 {r['p99_ms']:.2f} ms p99.9 {r['p999_ms']:.2f} ms", flush=True)
        rss = {a: peak_rss_mb(procs[a].pid) for a in arms if a in procs}
    finally:
        if kafka:
            kafka.stop()
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    med = statistics.median
    broker_name = "Apache Kafka" if kafka else "tansu"
    stunnel_note = "" if kafka else " (and stunnel's, for TLS)"
    lines = [
        f"End-to-end produce bench: {args.size} B records, acks=all, idempotent, linger.ms=5, "
        f"3 partitions, {args.pairs} alternating rounds; {broker_name} + producer on core 0, proxy on core 1"
        + (f"; producer settings {args.producer_conf}" if args.producer_conf != "{}" else "") + ".",
        f"Machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| arm | produce records/s | MB/s | ratio vs direct (median of rounds) | p50 ms | p99 ms "
        "| p99.9 ms | consume records/s | consume ratio | proxy CPU s/GB | proxy consume CPU s/GB "
        "| proxy peak RSS MB | core 0 (broker + producer) CPU s/GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        rps = med(r["records_per_s"] for r in sat[arm])
        mbs = med(r["mb_per_s"] for r in sat[arm])
        # TLS arms compare with direct-over-TLS; every other arm with plaintext direct.
        base = "direct-tls" if arm in ("direct-tls", "meshgate-tls") else "direct"
        if base in sat:
            ratio = med(a["records_per_s"] / d["records_per_s"] for a, d in zip(sat[arm], sat[base]))
            ratio_s = f"{ratio:.3f}" + (" (vs direct-tls)" if base == "direct-tls" else "")
        else:
            ratio_s = "-"
        p50 = med(r["p50_ms"] for r in lat[arm])
        p99 = med(r["p99_ms"] for r in lat[arm])
        p999 = med(r["p999_ms"] for r in lat[arm])
        c = f"{med(cpu[arm]):.2f}" if cpu[arm] else "-"
        m = f"{rss[arm]:.0f}" if arm in rss else "-"
        crps = med(r["records_per_s"] for r in cons[arm])
        cratio = (f"{med(a['records_per_s'] / d['records_per_s'] for a, d in zip(cons[arm], cons[base])):.3f}"
                  if base in cons else "-")
        kc = f"{med(cons_cpu[arm]):.2f}" if cons_cpu[arm] else "-"
        lines.append(f"| {arm} | {rps:.0f} | {mbs:.1f} | {ratio_s} | {p50:.2f} | {p99:.2f} | "
                     f"{p999:.2f} | {crps:.0f} | {cratio} | {c} | {kc} | {m} | {med(core0[arm]):.2f} |")
    rate_note = int(args.rate or (0.5 * sat["direct"][0]["records_per_s"] if "direct" in sat else 10_000))
    lines += ["", "Consume: one librdkafka consumer (core 0) reads the saturate phase's records back "
                  f"through the same arm ({args.consume_passes} time(s) over); its rate counts each "
                  "pass from its first record to its last. "
                  f"proxy CPU covers the produce phase, proxy consume CPU the consume phase (per GB "
                  f"of record bytes read). Core 0 CPU is {broker_name}'s{stunnel_note} and "
                  "the producer's over the produce phase: it shows what an arm costs the broker's core.",
              "", f"Latency columns: produce-to-delivery at a fixed offered load of about 50% of the "
                  f"direct arm's saturation unless --rate is given ({rate_note} records/s in round 1), {args.rate_seconds:.0f} s "
                  f"per arm per round."]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
