"""The quick start's demo: create a data-product topic through meshgate, produce a few records,
and read them back, printing what happens at each step."""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
topic = "orders.order-events.v1"

admin = AdminClient({"bootstrap.servers": bootstrap})
if topic not in admin.list_topics(timeout=10).topics:
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(15)
    print(f"created topic {topic} through meshgate")
md = admin.list_topics(timeout=10)
print("brokers as clients see them:", ", ".join(f"{b.host}:{b.port} (node {n})" for n, b in md.brokers.items()))

records = [
    {"order_id": f"o-{uuid.uuid4().hex[:6]}", "customer_id": "c-17", "order_total": 42.5},
    {"order_id": f"o-{uuid.uuid4().hex[:6]}", "customer_id": "c-99", "order_total": 12.0},
]
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
outcome = {}
for r in records:
    p.produce(topic, key=r["customer_id"], value=json.dumps(r),
              on_delivery=lambda err, msg, r=r: outcome.__setitem__(r["order_id"], err))
p.flush(15)
for order_id, err in outcome.items():
    print(f"produce {order_id}: {'ACCEPTED' if err is None else 'REJECTED: ' + str(err)}")

wanted = {r["order_id"] for r in records if outcome.get(r["order_id"]) is None}
c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4().hex[:6]}",
              "auto.offset.reset": "earliest"})
c.subscribe([topic])
seen = set()
end = time.time() + 20
while time.time() < end and not wanted <= seen:
    m = c.poll(0.5)
    if m is not None and not m.error():
        seen.add(json.loads(m.value()).get("order_id"))
c.close()
for order_id in sorted(wanted):
    print(f"consumed back {order_id}: {'yes' if order_id in seen else 'NO'}")
