"""Load generator for the end-to-end bench: one librdkafka (confluent-kafka) producer.

Two modes, printed as one JSON object:
  saturate: produce --records as fast as the client can; throughput and latency at saturation.
  rate:     produce at --rate records/s for --seconds; latency at a fixed offered load.

Latency is produce() to delivery report, served by poll() with a timeout so that reports are
timestamped as they arrive. Settings follow ../shared/docs/BENCHMARKING.md: acks=all,
idempotence on, linger.ms=5.
"""

import argparse
import base64
import json
import time

from confluent_kafka import Producer


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--mode", choices=["saturate", "rate"], default="saturate")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--conf-json", default="{}",
                    help="extra librdkafka settings, as a JSON object (e.g. TLS)")
    ap.add_argument("--value-file", help="values to cycle through, one per line (JSON payloads, or base64 when the file name ends in .b64)")
    args = ap.parse_args()

    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        **json.loads(args.conf_json),
    })
    if args.value_file:
        with open(args.value_file, "rb") as f:
            values = [line.rstrip(b"\n") for line in f if line.strip()]
        if args.value_file.endswith(".b64"):
            values = [base64.b64decode(v) for v in values]
    else:
        values = [bytes([97 + (i % 26)]) * args.size for i in range(16)]
    latencies = []
    errors = [0]

    error_names = {}

    def on_delivery(err, msg, t0):
        if err is not None:
            errors[0] += 1
            error_names[err.name()] = error_names.get(err.name(), 0) + 1
        else:
            latencies.append(time.perf_counter() - t0)

    # Warm up outside the measured window: metadata, connections and the idempotent producer id.
    p.produce(args.topic, value=values[0])
    if p.flush(60) != 0:
        raise SystemExit("warm-up record was not delivered")

    produced_bytes = 0
    start = time.perf_counter()
    cpu_start = time.process_time()  # every thread of this process, librdkafka's included
    n = 0
    if args.mode == "saturate":
        while n < args.records:
            v = values[n % len(values)]
            t0 = time.perf_counter()
            try:
                p.produce(args.topic, value=v, on_delivery=lambda e, m, t0=t0: on_delivery(e, m, t0))
            except BufferError:
                p.poll(0.001)
                continue
            produced_bytes += len(v)
            n += 1
            if n % 1000 == 0:
                p.poll(0)
    else:
        interval = 1.0 / args.rate
        total = int(args.rate * args.seconds)
        next_send = start
        while n < total:
            now = time.perf_counter()
            if now < next_send:
                p.poll(next_send - now)
                continue
            v = values[n % len(values)]
            t0 = time.perf_counter()
            p.produce(args.topic, value=v, on_delivery=lambda e, m, t0=t0: on_delivery(e, m, t0))
            produced_bytes += len(v)
            n += 1
            next_send += interval
            p.poll(0)
    remaining = p.flush(120)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    latencies.sort()
    print(json.dumps({
        "mode": args.mode,
        "records": n,
        "undelivered": remaining,
        "errors": errors[0],
        "error_names": error_names,
        "seconds": elapsed,
        "records_per_s": n / elapsed,
        "mb_per_s": produced_bytes / elapsed / 1e6,
        "bytes": produced_bytes,
        "cpu_s": cpu,
        "p50_ms": (percentile(latencies, 50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 99) or 0) * 1000,
        "p999_ms": (percentile(latencies, 99.9) or 0) * 1000,
    }))


if __name__ == "__main__":
    main()
