#!/usr/bin/env python3
"""Kafka's own load generators, direct to Apache Kafka and through meshgate, in one run.

`org.apache.kafka.tools.ProducerPerformance` and `ConsumerPerformance` (kafka-tools, from the jars
scripts/setup caches) are what Kafka users quote. Pinned and alternated as
../shared/docs/BENCHMARKING.md describes:

  Apache Kafka + the perf tool: core 0 (`taskset`, inherited by every thread)
  meshgate: core 1

Arms: direct, meshgate (no policies), meshgate-contract (the JSON contract of benches/e2e.py on
the same JSON order payloads). Every arm sends the same payload file, so the bytes match. Arms
alternate for --pairs rounds, reversed on odd rounds; ratios are per round against that round's
direct arm, and the median is reported.

Usage:
  cargo build --release
  python3 benches/kafka_perf.py --records 300000 --pairs 3 --out bench-results/kafka-perf-1k.md
"""

import argparse
import json
import os
import re
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
from kafka_cluster import KafkaCluster, classpath, java  # noqa: E402

sys.path.insert(0, str(ROOT / "benches"))
from e2e import write_json_orders  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def perf_tool(main_class, *args) -> str:
    cmd = ["taskset", "-c", "0", java(), "-Xmx512m", "-cp", classpath(), main_class, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{main_class} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


# "300000 records sent, 61224.5 records/sec (59.79 MB/sec), 380.12 ms avg latency, 812.00 ms max
# latency, 371 ms 50th, 640 ms 95th, 700 ms 99th, 790 ms 99.9th."
PRODUCER_SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def produce(bootstrap, topic, records, payloads) -> dict:
    out = perf_tool("org.apache.kafka.tools.ProducerPerformance",
                    "--bootstrap-server", bootstrap, "--topic", topic,
                    "--num-records", str(records), "--throughput", "-1",
                    "--payload-file", str(payloads),
                    "--producer-props", "acks=all", "enable.idempotence=true", "linger.ms=5",
                    "batch.size=65536", "compression.type=none")
    m = None
    for m in PRODUCER_SUMMARY.finditer(out):
        pass
    if m is None:
        raise RuntimeError(f"no summary in ProducerPerformance output:\n{out[-2000:]}")
    return {"records": int(m[1]), "records_per_s": float(m[2]), "mb_per_s": float(m[3]),
            "p50_ms": int(m[6]), "p99_ms": int(m[8]), "p999_ms": int(m[9])}


def consume(bootstrap, topic, records) -> dict:
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    out = perf_tool("org.apache.kafka.tools.ConsumerPerformance",
                    "--bootstrap-server", bootstrap, "--topic", topic,
                    "--messages", str(records), "--timeout", "60000",
                    "--group", f"perf-{uuid.uuid4().hex[:8]}")
    row = [line for line in out.splitlines() if re.match(r"^\d{4}-", line)][-1].split(",")
    if int(float(row[4])) < records:
        raise RuntimeError(f"consumed {row[4]} of {records}")
    return {"records_per_s": float(row[5]), "mb_per_s": float(row[3])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--arms", default="direct,meshgate,meshgate-contract")
    ap.add_argument("--meshgate", default=str(ROOT / "target" / "release" / "meshgate"))
    ap.add_argument("--out")
    args = ap.parse_args()
    arms = args.arms.split(",")
    logdir = Path(tempfile.mkdtemp(prefix="kafka-perf-"))
    payloads = logdir / "orders.jsonl"
    write_json_orders(payloads, args.size)

    kafka = KafkaCluster(logdir / "kafka", size=1)
    kafka.start(taskset="0")
    broker_pid = kafka.nodes[0].proc.pid
    bootstrap = {"direct": kafka.bootstrap()}
    procs = {}
    contract_topics = [f"bench.perf{i}.v1" for i in range(args.pairs)]

    def start_meshgate(arm, policies):
        port, admin = port_block(300), port_block(1)
        procs[arm] = subprocess.Popen(
            ["taskset", "-c", "1", args.meshgate, "run", "--listen", f"127.0.0.1:{port}",
             "--admin", f"127.0.0.1:{admin}", "--upstream", bootstrap["direct"],
             "--policies", str(policies)],
            stdout=open(logdir / f"{arm}.log", "w"), stderr=subprocess.STDOUT)
        wait_for_port(port)
        bootstrap[arm] = f"127.0.0.1:{port}"

    try:
        if "meshgate" in arms:
            start_meshgate("meshgate", tempfile.mkdtemp(prefix="nopolicies-"))
        if "meshgate-contract" in arms:
            policies = Path(tempfile.mkdtemp(prefix="contract-policies-"))
            (policies / "order.avsc").write_text(
                (ROOT / "policies" / "contracts" / "schemas" / "order-events-v1.avsc").read_text())
            (policies / "contracts.yaml").write_text("---\n".join(
                f"contract:\n  name: perf-{i}\n  owner: bench\n  topic: {t}\n"
                f"  schema: {{ format: json, file: order.avsc }}\n"
                f"  quality:\n    validity_rules: [order_total > 0, customer_id is not null]\n"
                for i, t in enumerate(contract_topics)))
            start_meshgate("meshgate-contract", policies)
        time.sleep(2)
        warm = "bench.perf-warmup.v1"
        create_topic(bootstrap["direct"], warm, partitions=3)
        produce(bootstrap["direct"], warm, min(args.records, 100_000), payloads)

        prod = {a: [] for a in arms}
        cons = {a: [] for a in arms}
        cpu = {a: [] for a in arms}
        core0 = {a: [] for a in arms}
        for rnd in range(args.pairs):
            for arm in (arms if rnd % 2 == 0 else arms[::-1]):
                topic = (contract_topics[rnd] if arm == "meshgate-contract"
                         else f"bench.perf-{uuid.uuid4().hex[:8]}.v1")
                create_topic(bootstrap["direct"], topic, partitions=3)
                pid = procs[arm].pid if arm in procs else None
                c0 = cpu_seconds(pid) if pid else 0
                b0 = cpu_seconds(broker_pid)
                r = produce(bootstrap[arm], topic, args.records, payloads)
                gb = r["mb_per_s"] and (args.records * args.size / 1e9)
                if pid:
                    cpu[arm].append((cpu_seconds(pid) - c0) / gb)
                core0[arm].append((cpu_seconds(broker_pid) - b0) / gb)
                prod[arm].append(r)
                c = consume(bootstrap[arm], topic, args.records)
                cons[arm].append(c)
                print(f"round {rnd} {arm:18} produce {r['records_per_s']:>9.0f} rec/s "
                      f"{r['mb_per_s']:6.1f} MB/s p99 {r['p99_ms']} ms; consume "
                      f"{c['records_per_s']:>9.0f} rec/s", flush=True)
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(10)
        kafka.stop()

    med = statistics.median
    lines = [
        f"Kafka's ProducerPerformance / ConsumerPerformance (kafka-tools, from Maven Central): "
        f"{args.size} B JSON order records from a payload file, acks=all, idempotent, linger.ms=5, "
        f"3 partitions, {args.records} records per arm per round, {args.pairs} alternating rounds; "
        f"Apache Kafka + the tool on core 0, meshgate on core 1.",
        f"Machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| arm | produce records/s | MB/s | ratio vs direct | p50 ms | p99 ms | p99.9 ms "
        "| consume records/s | consume ratio | meshgate CPU s/GB (= millicores per MB/s) "
        "| broker CPU s/GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        ratio = med(a["records_per_s"] / d["records_per_s"] for a, d in zip(prod[arm], prod["direct"]))
        cratio = med(a["records_per_s"] / d["records_per_s"] for a, d in zip(cons[arm], cons["direct"]))
        c = med(cpu[arm]) if cpu[arm] else None
        # CPU-s per GB is millicores per (MB/s): 1 s of CPU per 1000 MB = 1 millicore per MB/s.
        lines.append(
            f"| {arm} | {med(r['records_per_s'] for r in prod[arm]):.0f} "
            f"| {med(r['mb_per_s'] for r in prod[arm]):.1f} | {ratio:.3f} "
            f"| {med(r['p50_ms'] for r in prod[arm]):.0f} | {med(r['p99_ms'] for r in prod[arm]):.0f} "
            f"| {med(r['p999_ms'] for r in prod[arm]):.0f} "
            f"| {med(r['records_per_s'] for r in cons[arm]):.0f} | {cratio:.3f} "
            f"| {'-' if c is None else f'{c:.2f}'} "
            f"| {med(core0[arm]):.2f} |")
    lines += ["", "Latencies are ProducerPerformance's own, at saturation (it sends as fast as it "
                  "can): they are queueing time in the producer, not the proxy's added latency; "
                  "benches/e2e.py measures that at a fixed rate."]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
