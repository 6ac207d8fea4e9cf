#!/usr/bin/env python3
"""Consume-throughput half of benches/e2e.py: reads --records records of --topic from the start
with librdkafka and prints one JSON line: records, bytes, seconds (first record to last),
records_per_s, mb_per_s.

--passes K reads the topic K times over (each pass assigns every partition at offset 0 again),
so that a fast consume phase lasts long enough to measure. The rate counts each pass from its
first record to its last and adds the passes up: the gap between passes (the assignment again,
a fetch parked at the end of the log for up to fetch.wait.max.ms) is the bench's artefact, not
the arm's, and left in it moved single rounds by a third."""

import argparse
import json
import time
import uuid

from confluent_kafka import Consumer, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--conf-json", default="{}")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--passes", type=int, default=1)
    args = ap.parse_args()
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  **json.loads(args.conf_json)})
    if args.passes == 1:
        c.subscribe([args.topic])
    else:
        partitions = sorted(c.list_topics(args.topic, timeout=10).topics[args.topic].partitions)
    count = size = 0
    seconds = 0.0
    end = time.time() + args.timeout
    for n in range(args.passes):
        if args.passes > 1:
            c.assign([TopicPartition(args.topic, p, 0) for p in partitions])
        want = args.records * (n + 1)
        first = None
        while count < want and time.time() < end:
            for m in c.consume(num_messages=10_000, timeout=0.5):
                if m.error():
                    continue
                if first is None:
                    first = time.perf_counter()
                count += 1
                size += len(m.value() or b"")
        if first is not None:
            seconds += time.perf_counter() - first
    c.close()
    seconds = max(seconds, 1e-9)
    print(json.dumps({"records": count, "bytes": size, "seconds": seconds,
                      "records_per_s": count / seconds, "mb_per_s": size / seconds / 1e6}))


if __name__ == "__main__":
    main()
