#!/usr/bin/env python3
"""What a dead-letter topic costs: the same JSON contract through meshgate with and without
`on_reject.dead_letter`, 1% of the records breaking its rule, in one run.

Pinned and alternated as ../shared/docs/BENCHMARKING.md describes:
  Apache Kafka (one KRaft node) + the librdkafka producer (benches/producer.py): core 0
  the two meshgates: core 1 (one arm runs at a time)

Arms:
  contract      the contract, no dead-letter topic: refused batches get INVALID_RECORD
  contract-dlq  the same contract with `on_reject: {dead_letter: ...}` (respond: error): the same
                answers, and the refused records are written to the dead-letter topic first
                (--spool: to the gateway's dead-letter spool, `own_client.spool`, which writes
                the topic in the background; the round's CPU is read once it has)

The payloads are 100 JSON orders of about --size bytes, one with `order_total` -1 (1%), cycled.
librdkafka (acks=all, idempotence, linger.ms=5, batch.size 64 KiB) sends about 64 records per
batch, so about half the batches hold an invalid record and are refused in both arms. The
producer's rate counts every record completed, delivered or refused. The arms alternate for
--pairs rounds, reversed on odd rounds; the ratio is taken per round and the median reported.

Usage:
  cargo build --release
  python3 benches/dead_letter.py --records 200000 --pairs 3 --out bench-results/dead-letter.md
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "benches"))
from conftest import port_block, wait_for_port  # noqa: E402
from clients import create_topic  # noqa: E402
from e2e import cpu_seconds, delete_topic, start  # noqa: E402
from kafka_cluster import KafkaCluster, classpath, java  # noqa: E402


def write_orders(path: Path, size: int):
    with open(path, "w") as f:
        for i in range(100):
            base = {"order_id": f"o-{i:08}", "customer_id": f"c-{i:05}",
                    "order_total": -1.0 if i == 57 else 10.5 + i, "currency": "EUR",
                    "status": "PAID", "item_count": 1 + i % 7}
            base["comment"] = "x" * max(0, size - len(json.dumps(base)) - 16)
            f.write(json.dumps(base) + "\n")


def produce(bootstrap, topic, records, size, values, idempotence=True, client="librdkafka"):
    if client == "java":
        cmd = ["taskset", "-c", "0", java(), "-Xmx512m", "-cp", classpath(),
               str(ROOT / "benches" / "support" / "SaturatingProducer.java"), bootstrap, topic,
               str(records), str(values)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    cmd = ["taskset", "-c", "0", sys.executable, str(ROOT / "benches" / "producer.py"),
           "--bootstrap", bootstrap, "--topic", topic, "--size", str(size), "--mode", "saturate",
           "--records", str(records), "--value-file", str(values),
           "--conf-json", json.dumps({"batch.size": 65536, "enable.idempotence": idempotence})]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spool_drained(admin, timeout=120):
    """Waits until the gateway's dead-letter spool has written everything to its topics."""
    import urllib.request
    end = time.time() + timeout
    while time.time() < end:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith("meshgate_dead_letter_spool_bytes ") and float(line.split()[1]) == 0:
                    return
        time.sleep(0.2)
    raise TimeoutError("the dead-letter spool did not drain")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--meshgate", default=str(ROOT / "target" / "release" / "meshgate"))
    ap.add_argument("--out")
    ap.add_argument("--no-idempotence", action="store_true",
                    help="a plain producer: librdkafka's idempotent producer drains and bumps its "
                         "epoch after every refused batch, which swamps what is measured here")
    ap.add_argument("--client", choices=["librdkafka", "java"], default="librdkafka",
                    help="java: kafka-clients (benches/support/SaturatingProducer.java), "
                         "idempotent as its defaults are")
    ap.add_argument("--spool", action="store_true",
                    help="the dead-letter arm answers once the records are in its local spool")
    ap.add_argument("--fsync", action="store_true", help="with --spool: fsync: true")
    ap.add_argument("--aa", action="store_true",
                    help="an A/A run: the second arm has no dead-letter topic either, so the "
                         "ratios show the bench's own spread")
    args = ap.parse_args()

    logdir = Path(tempfile.mkdtemp(prefix="bench-dlq-"))
    kafka = KafkaCluster(logdir / "kafka", size=1)
    kafka.start(taskset="0")
    direct = kafka.bootstrap()
    values = logdir / "orders.jsonl"
    write_orders(values, args.size)
    schema = (ROOT / "policies" / "contracts" / "schemas" / "order-events-v1.avsc").read_text()
    arms = ["contract", "contract-dlq"]
    procs, bootstrap, admins = {}, {}, {}
    for arm in arms:
        policies = logdir / f"policies-{arm}"
        (policies / "schemas").mkdir(parents=True)
        (policies / "schemas" / "order.avsc").write_text(schema)
        docs = []
        for i in [*map(str, range(args.pairs)), "warm"]:
            # The bound is set far above the bench's rate: past it a partition is refused as
            # without a dead-letter topic, which would measure the bound, not the writes.
            on_reject = (f"  on_reject: {{ dead_letter: bench.dlq{i}.v1, "
                         "max_records_per_second: 1000000, max_bytes_per_second: 1000000000 }\n"
                         if arm == "contract-dlq" and not args.aa else "")
            docs.append(f"contract:\n  name: bench-{i}\n  owner: bench\n  topic: bench.dl{i}.v1\n"
                        "  schema: { format: json, file: schemas/order.avsc }\n" + on_reject +
                        "  quality:\n    validity_rules: [order_total > 0, customer_id is not null]\n")
        (policies / "contracts.yaml").write_text("---\n".join(docs))
        port, admin = port_block(300), port_block(1)
        extra = []
        if args.spool and arm == "contract-dlq":
            (logdir / "gateway.yaml").write_text(
                f"own_client:\n  spool:\n    dir: {logdir / 'spool'}\n    fsync: {str(args.fsync).lower()}\n")
            extra = ["--config", str(logdir / "gateway.yaml")]
        procs[arm] = start([args.meshgate, "run", "--listen", f"127.0.0.1:{port}", "--admin",
                            f"127.0.0.1:{admin}", "--upstream", direct, "--policies", str(policies),
                            *extra],
                           1, logdir / f"{arm}.log")
        wait_for_port(port)
        bootstrap[arm] = f"127.0.0.1:{port}"
        admins[arm] = admin
    # Warm-up, not measured: the broker's JIT, and each gateway's connections and producer id.
    create_topic(direct, "bench.dlwarm.v1", partitions=3)
    create_topic(direct, "bench.dlqwarm.v1", partitions=1)
    for arm in arms:
        produce(bootstrap[arm], "bench.dlwarm.v1", 20_000, args.size, values,
                not args.no_idempotence, args.client)
    if args.spool:
        spool_drained(admins["contract-dlq"])
    delete_topic(direct, "bench.dlwarm.v1")
    delete_topic(direct, "bench.dlqwarm.v1")
    time.sleep(2)
    rates = {a: [] for a in arms}
    cpu = {a: [] for a in arms}
    refused = {a: [] for a in arms}
    dead = []
    try:
        for rnd in range(args.pairs):
            order = arms if rnd % 2 == 0 else arms[::-1]
            for arm in order:
                topic = f"bench.dl{rnd}.v1"
                create_topic(direct, topic, partitions=3)
                if arm == "contract-dlq":
                    create_topic(direct, f"bench.dlq{rnd}.v1", partitions=1)  # unused with --aa
                c0 = cpu_seconds(procs[arm].pid)
                r = produce(bootstrap[arm], topic, args.records, args.size, values,
                            not args.no_idempotence, args.client)
                if args.spool and arm == "contract-dlq":
                    spool_drained(admins[arm])
                cpu[arm].append((cpu_seconds(procs[arm].pid) - c0) / (r["bytes"] / 1e9))
                rates[arm].append(r["records_per_s"])
                refused[arm].append(r["errors"] / r["records"])
                if arm == "contract-dlq":
                    from confluent_kafka import Consumer, TopicPartition
                    c = Consumer({"bootstrap.servers": direct, "group.id": "bench-count"})
                    lo, hi = c.get_watermark_offsets(TopicPartition(f"bench.dlq{rnd}.v1", 0), timeout=10)
                    c.close()
                    dead.append(hi - lo)
                    delete_topic(direct, f"bench.dlq{rnd}.v1")
                delete_topic(direct, topic)
                print(f"round {rnd} {arm:13} {r['records_per_s']:>9.0f} rec/s; refused "
                      f"{refused[arm][-1]:.1%}; meshgate {cpu[arm][-1]:.2f} CPU s/GB", flush=True)
                time.sleep(1)
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{admins['contract-dlq']}/metrics") as r:
            samples = [l for l in r.read().decode().splitlines()
                       if l.startswith("meshgate_dead_letter_write_seconds_")]
            m = {l.split(" ")[0]: float(l.split(" ")[1]) for l in samples}
            buckets = [(l.split('le="')[1].split('"')[0], int(float(l.split(" ")[1])))
                       for l in samples if "_bucket{" in l]
        write_ms = 1000 * m["meshgate_dead_letter_write_seconds_sum"] / max(1, m["meshgate_dead_letter_write_seconds_count"])
    finally:
        for p in procs.values():
            p.terminate()
        kafka.stop()
    ratios = [d / c for c, d in zip(rates["contract"], rates["contract-dlq"])]
    lines = [
        "# Dead-letter topic cost: the same contract with and without `on_reject`",
        "",
        f"`python3 benches/dead_letter.py --records {args.records} --size {args.size} --pairs {args.pairs}"
        f"{' --no-idempotence' if args.no_idempotence else ''}"
        f"{' --client java' if args.client == 'java' else ''}"
        f"{' --spool' if args.spool else ''}{' --fsync' if args.fsync else ''}"
        f"{' --aa' if args.aa else ''}`"
        " (release build; Kafka + producer on core 0, meshgate on core 1; 1% of records invalid).",
        "",
        "| arm | records/s (median) | refused records (median) | meshgate CPU s/GB (median) |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        lines.append(f"| {arm} | {statistics.median(rates[arm]):,.0f} | "
                     f"{statistics.median(refused[arm]):.1%} | {statistics.median(cpu[arm]):.2f} |")
    lines += [
        "",
        f"Per-round throughput ratio contract-dlq / contract: "
        f"{', '.join(f'{r:.3f}' for r in ratios)}; median **{statistics.median(ratios):.3f}**.",
        f"Records written to the dead-letter topic per round: {', '.join(map(str, dead))} "
        f"(of {args.records} produced; the invalid ones are 1%).",
        f"Mean dead-letter write (meshgate_dead_letter_write_seconds): {write_ms:.2f} ms; "
        "writes done within (s), warm-up included: "
        + ", ".join(f"{le}: {n}" for le, n in buckets) + ".",
    ]
    text = "\n".join(lines) + "\n"
    if args.aa:
        text = text.replace("contract-dlq", "contract-b (the same, again)")
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
