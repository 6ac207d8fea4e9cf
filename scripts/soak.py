#!/usr/bin/env python3
"""Soak: mixed valid and invalid traffic through meshgate for --minutes, with two broker crashes
(SIGKILL, restart on the same port and storage) and a policy reload every 15 s, then an exact
accounting: the consumed set must equal the accepted set, with no rejected record present and no
accepted record missing or duplicated.

  cargo build --release
  python3 scripts/soak.py --minutes 10 --out bench-results/soak.md

Producers (all acks=all):
- two idempotent producers send valid orders only, straight through the crashes: idempotence is
  what keeps a retried batch from landing twice;
- one producer sends valid and invalid orders, one record per request, so that each record gets
  its own verdict. It is not idempotent (librdkafka answers a rejected record by bumping its
  epoch, which tansu refuses), so it pauses across each crash: a request in flight when a broker
  dies has no knowable outcome without idempotence, and the accounting must be exact.

The broker is tansu with its sqlite engine (the in-memory one forgets everything on restart);
it needs the tansu built with the libsql feature (scripts/setup tansu-sqlite builds it).
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from confluent_kafka import KafkaError, Producer  # noqa: E402

from clients import consume, create_topic  # noqa: E402
from conftest import port_block, start_gateway, start_tansu  # noqa: E402

CONTRACT = """
contract:
  name: soak-orders
  owner: soak-team
  topic: {topic}
  quality:
    validity_rules: [{rules}]
"""
RULE_VARIANTS = [  # the same two rules, written three ways: reloads must not change verdicts
    "order_total > 0, customer_id is not null",
    "NOT (order_total <= 0), customer_id IS NOT NULL",
    "order_total > 0 AND customer_id is not null",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--out")
    args = ap.parse_args()
    duration = args.minutes * 60
    tansu_bin = os.environ.get("TANSU_SASL_BIN") or str(Path.home() / ".local/tansu-libsql/bin/tansu")
    os.environ.setdefault("MESHGATE_BIN", str(ROOT / "target" / "release" / "meshgate"))
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    policies = work / "policies"
    policies.mkdir()
    topic = f"soak.orders{uuid.uuid4().hex[:6]}.v1"
    (policies / "soak.yaml").write_text(CONTRACT.format(topic=topic, rules=RULE_VARIANTS[0]))
    port = port_block(1)
    broker = {"b": start_tansu(port, work, storage="sqlite://tansu.db", binary=tansu_bin, cwd=work)}
    gw = start_gateway(broker["b"].bootstrap, work, policies=policies, rust_log="info")
    create_topic(gw.bootstrap, topic, partitions=6)

    lock = threading.Lock()
    accepted, rejected, failed = [], [], []
    sent_invalid = []
    stop = threading.Event()
    calm = threading.Event()  # set while no crash is under way
    calm.set()

    def order(pid, i, valid):
        return json.dumps({"id": f"{pid}-{i}", "order_total": (10.0 + i % 90) if valid else -1.0,
                           "customer_id": f"c-{i % 977}"}).encode()

    def idempotent_producer(pid):
        p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5, "message.timeout.ms": 300_000})

        def report(err, msg):
            with lock:
                (failed if err else accepted).append(msg.value())
        i = 0
        while not stop.is_set():
            p.produce(topic, order(pid, i, True), on_delivery=report)
            p.poll(0)
            i += 1
            time.sleep(0.004)
        p.flush(300)

    def mixed_producer(pid):
        p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": False,
                      "retries": 0, "linger.ms": 0, "max.in.flight": 1})

        def report(err, msg):
            with lock:
                if err is None:
                    accepted.append(msg.value())
                elif err.code() == KafkaError.INVALID_RECORD:
                    rejected.append(msg.value())
                else:
                    failed.append(msg.value())
        i = 0
        while not stop.is_set():
            calm.wait()
            valid = i % 5 != 4
            v = order(pid, i, valid)
            if not valid:
                with lock:
                    sent_invalid.append(v)
            p.produce(topic, v, on_delivery=report)
            p.flush(30)
            i += 1
            time.sleep(0.01)

    def reloader():
        n = 0
        while not stop.wait(15):
            n += 1
            tmp = policies / ".soak.tmp"
            tmp.write_text(CONTRACT.format(topic=topic, rules=RULE_VARIANTS[n % 3]))
            os.replace(tmp, policies / "soak.yaml")

    threads = [threading.Thread(target=idempotent_producer, args=(f"idem{k}",)) for k in range(2)]
    threads.append(threading.Thread(target=mixed_producer, args=("mixed",)))
    threads.append(threading.Thread(target=reloader))
    for t in threads:
        t.start()
    started = time.time()
    crashes = 0
    try:
        for at in (duration / 3, 2 * duration / 3):
            time.sleep(max(0, started + at - time.time()))
            calm.clear()
            time.sleep(1)  # the mixed producer's last request settles
            broker["b"].proc.send_signal(signal.SIGKILL)
            broker["b"].proc.wait()
            time.sleep(3)
            broker["b"] = start_tansu(port, work, storage="sqlite://tansu.db", binary=tansu_bin, cwd=work)
            crashes += 1
            time.sleep(5)
            calm.set()
            print(f"{time.time() - started:6.0f}s broker crash {crashes} survived; "
                  f"{len(accepted)} accepted so far", flush=True)
        time.sleep(max(0, started + duration - time.time()))
    finally:
        stop.set()
        calm.set()
        for t in threads:
            t.join()
    got = consume(gw.bootstrap, [topic], len(accepted), timeout=300, settle=10)
    reloads = [l for l in gw.metrics().splitlines()
               if l.startswith("meshgate_policy_reloads_total")]
    gw_exit = gw.stop()
    broker["b"].stop()

    consumed = set(got)
    duplicates = len(got) - len(consumed)
    missing = set(accepted) - consumed
    extra = consumed - set(accepted)
    rejected_present = consumed & set(rejected)
    counts = {
        "minutes": args.minutes, "broker_crashes": crashes,
        "accepted": len(accepted), "rejected_by_policy": len(rejected),
        "invalid_sent": len(sent_invalid), "failed_other": len(failed),
        "consumed": len(got), "duplicates": duplicates, "accepted_missing": len(missing),
        "consumed_not_accepted": len(extra), "rejected_present": len(rejected_present),
        "policy_reloads": reloads, "meshgate_exit": gw_exit,
    }
    ok = (duplicates == 0 and not missing and not extra and not rejected_present
          and sorted(rejected) == sorted(sent_invalid) and not failed and gw_exit == 0)
    lines = [f"Soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): "
             f"{'PASS' if ok else 'FAIL'}", "", "| count | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
