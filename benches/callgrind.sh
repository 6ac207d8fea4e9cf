#!/usr/bin/env bash
# Instruction counts of one meshgate build for a fixed JSON-contract workload, under callgrind:
# 20,000 records of about 1 KiB through the gateway to a fresh tansu. Counts do not drift with
# machine load, so two builds compare exactly.
#
#   benches/callgrind.sh target/release/meshgate /tmp/cg-head.out
#   callgrind_annotate /tmp/cg-head.out | head -30
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$1
out=$2
work=$(mktemp -d)
tansu broker --listener-url tcp://127.0.0.1:29092 --advertised-listener-url tcp://127.0.0.1:29092 \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
tp=$!
trap 'kill $tp 2>/dev/null || true' EXIT
sleep 1
mkdir -p "$work/policies/schemas"
cp "$root/policies/contracts/schemas/order-events-v1.avsc" "$work/policies/schemas/o.avsc"
printf 'contract:\n  name: cg\n  owner: o\n  topic: cg.orders.v1\n  schema: { format: json, file: schemas/o.avsc }\n  quality:\n    validity_rules: [order_total > 0, customer_id is not null]\n' \
  >"$work/policies/c.yaml"
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run --listen 127.0.0.1:29500 \
  --admin 127.0.0.1:29900 --upstream 127.0.0.1:29092 --policies "$work/policies" >"$work/meshgate.log" 2>&1 &
mp=$!
for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/29500) 2>/dev/null && break; sleep 0.2; done
python3 - "$root" "$work" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1] + "/tests/e2e")
from clients import create_topic
create_topic("127.0.0.1:29092", "cg.orders.v1", 3)
with open(sys.argv[2] + "/values.jsonl", "w") as f:
    for i in range(64):
        b = {"order_id": f"o-{i:08}", "customer_id": f"c-{i:05}", "order_total": 10.5 + i, "currency": "EUR",
             "status": "PAID", "item_count": 1 + i % 7, "channel": "web", "placed_at": 1764000000000 + i,
             "coupon": None, "shipping_country": "FR"}
        b["comment"] = "x" * (1024 - len(json.dumps(b)) - 16)
        f.write(json.dumps(b) + "\n")
PY
python3 "$root/benches/producer.py" --bootstrap 127.0.0.1:29500 --topic cg.orders.v1 --records 20000 \
  --value-file "$work/values.jsonl" | tail -n 1
kill -TERM $mp
wait $mp || true
callgrind_annotate "$out" 2>/dev/null | grep -m1 "PROGRAM TOTALS"
