#!/usr/bin/env python3
"""What the audit trail costs meshgate in CPU, at a given rate of decisions, end to end.

Two meshgate processes (release build, pinned to core 1) in front of one tansu (core 0): the same
policies, one with `audit: {file: ...}` in its config and one without. A producer (core 0)
sends records that break a contract rule to 16 partitions at a fixed rate, non-idempotent with no
retries, so every rejected partition of every request is one decision (a refusal, counted in
`meshgate_policy_rejections_total`, and with the trail on, one audit line). The two gateways take
turns for --rounds rounds; each turn measures the decisions made and meshgate's CPU seconds
(/proc/PID/stat). The result is CPU microseconds per decision with and without the trail, and
the trail's share of meshgate's CPU.

  cargo build --release
  python3 benches/audit_cpu.py --rate 20000 --seconds 8 --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import port_block, wait_for_port  # noqa: E402
from clients import create_topic  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

PRODUCER = r"""
import json, sys, time
from confluent_kafka import Producer
bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
              "retries": 0, "linger.ms": 1, "queue.buffering.max.messages": 1000000})
counts = {"ok": 0, "err": 0}
def report(err, msg):
    counts["err" if err else "ok"] += 1
value = json.dumps({"order_id": "o", "customer_id": "c", "order_total": -1}).encode()
start = time.time(); sent = 0
while time.time() - start < seconds:
    target = int((time.time() - start) * rate)
    while sent < target:
        p.produce(topic, value=value, partition=sent % 16, on_delivery=report)
        sent += 1
    p.poll(0)
    time.sleep(0.001)
p.flush(60)
print(json.dumps({"sent": sent, **counts}))
"""


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=20000, help="records per second produced")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--meshgate", default=str(ROOT / "target" / "release" / "meshgate"))
    ap.add_argument("--out", help="write the markdown table here too")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    port = port_block(1)
    url = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen(["taskset", "-c", "0", "tansu", "broker", "--listener-url", url,
                               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                              stdout=open(work / "tansu.log", "w"), stderr=subprocess.STDOUT)]
    try:
        wait_for_port(port)
        upstream = f"127.0.0.1:{port}"
        policies = work / "policies"
        (policies / "schemas").mkdir(parents=True)
        (policies / "schemas" / "o.avsc").write_text(
            (ROOT / "policies" / "contracts" / "schemas" / "order-events-v1.avsc").read_text())
        (policies / "c.yaml").write_text(
            "contract:\n  name: bench-audit\n  owner: bench\n  topic: bench.audit.v1\n"
            "  schema: { format: json, file: schemas/o.avsc }\n"
            "  quality:\n    validity_rules: [order_total > 0]\n")
        create_topic(upstream, "bench.audit.v1", partitions=16)
        gateways = {}
        for arm in ["audit-off", "audit-on"]:
            gport, admin = port_block(300), port_block(1)
            extra = []
            if arm == "audit-on":
                config = work / "gateway.yaml"
                config.write_text(f"audit:\n  file: {work / 'audit.jsonl'}\n")
                extra = ["--config", str(config)]
            proc = subprocess.Popen(["taskset", "-c", "1", args.meshgate, "run", "--listen",
                                     f"127.0.0.1:{gport}", "--admin", f"127.0.0.1:{admin}",
                                     "--upstream", upstream, "--policies", str(policies), *extra],
                                    stdout=open(work / f"{arm}.log", "w"), stderr=subprocess.STDOUT,
                                    env=dict(os.environ, RUST_LOG="warn"))
            procs.append(proc)
            wait_for_port(gport)
            gateways[arm] = (proc, f"127.0.0.1:{gport}", admin)
        rows = {arm: [] for arm in gateways}
        for rnd in range(args.rounds):
            order = list(gateways) if rnd % 2 == 0 else list(reversed(gateways))
            for arm in order:
                proc, bootstrap, admin = gateways[arm]
                d0, c0 = metric(admin, "meshgate_policy_rejections_total"), cpu_seconds(proc.pid)
                out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", PRODUCER, bootstrap,
                                      "bench.audit.v1", str(args.rate), str(args.seconds)],
                                     capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise RuntimeError(out.stderr)
                produced = json.loads(out.stdout.strip().splitlines()[-1])
                decisions = metric(admin, "meshgate_policy_rejections_total") - d0
                cpu = cpu_seconds(proc.pid) - c0
                rows[arm].append({"decisions": decisions, "decisions_per_s": decisions / args.seconds,
                                  "cpu_s": cpu, "us_per_decision": cpu / decisions * 1e6,
                                  **produced})
                print(arm, rows[arm][-1], flush=True)
        written = metric(gateways["audit-on"][2], 'meshgate_audit_events_total{outcome="written"}')
        dropped = metric(gateways["audit-on"][2], 'meshgate_audit_events_total{outcome="dropped"}')
        verify = subprocess.run([args.meshgate, "audit", "verify", str(work / "audit.jsonl")],
                                capture_output=True, text=True)
        off = statistics.median(r["us_per_decision"] for r in rows["audit-off"])
        on = statistics.median(r["us_per_decision"] for r in rows["audit-on"])
        rate = statistics.median(r["decisions_per_s"] for r in rows["audit-on"])
        lines = [
            f"# Audit trail CPU cost, {time.strftime('%Y-%m-%d')}",
            "",
            f"`python3 benches/audit_cpu.py --rate {args.rate:g} --seconds {args.seconds:g} --rounds {args.rounds}`:"
            " tansu on core 0 with the producer, meshgate (release) on core 1, arms alternated.",
            "",
            "| arm | decisions/s (median) | meshgate CPU µs per decision (median) | rounds |",
            "|---|---|---|---|",
        ]
        for arm in ["audit-off", "audit-on"]:
            lines.append(f"| {arm} | {statistics.median(r['decisions_per_s'] for r in rows[arm]):,.0f} | "
                         f"{statistics.median(r['us_per_decision'] for r in rows[arm]):.1f} | "
                         + ", ".join(f"{r['us_per_decision']:.1f}" for r in rows[arm]) + " |")
        lines += [
            "",
            f"The trail adds {on - off:.1f} µs of meshgate CPU per decision: {(on - off) / on * 100:.1f}% of"
            f" meshgate's CPU with the trail on; at 10,000 decisions a second that is"
            f" {(on - off) * 1e4 / 1e6 * 100:.1f}% of one core.",
            f"Audit events written: {written:,.0f}, dropped: {dropped:,.0f};"
            f" `meshgate audit verify`: {verify.stdout.strip() or verify.stderr.strip()}",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
