"""The quick start's demo: talk to meshgate like any Kafka client and watch it enforce the
example policies in policies/. Prints what happens at each step."""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
topic = "orders.order-events.v1"
admin = AdminClient({"bootstrap.servers": bootstrap})


def create(name, partitions):
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(15)
        print(f"  create {name} ({partitions} partitions): CREATED")
    except KafkaException as e:
        err = e.args[0]
        if err.name() == "TOPIC_ALREADY_EXISTS":
            print(f"  create {name}: already exists")
        else:
            print(f"  create {name} ({partitions} partitions): REFUSED {err.name()}: {err.str()}")


print("1. Topic creation (naming convention, partition minimum, require_contract):")
create("OrdersTopic", 3)
create("orders.order-events.v1", 1)
create("orders.returns.v1", 3)
create(topic, 3)

print("2. Produce to the order-events data product (contract: order_total > 0, customer_id is not null):")
records = [
    {"order_id": "o-1001", "customer_id": "c-17", "order_total": 42.5, "status": "PLACED"},
    {"order_id": "o-1002", "customer_id": "c-99", "order_total": 12.0, "status": "PAID"},
    {"order_id": "o-1003", "customer_id": "c-17", "order_total": 0, "status": "PLACED"},
    {"order_id": "o-1004", "customer_id": None, "order_total": 9.5, "status": "PLACED"},
]
run = uuid.uuid4().hex[:6]
for r in records:
    r["order_id"] += f"-{run}"
# One producer per record, so that each record is its own batch and gets its own verdict.
outcome = {}
for r in records:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "compression.type": "zstd"})
    p.produce(topic, key=r["order_id"], value=json.dumps(r), headers={"trace-id": run},
              on_delivery=lambda err, msg, r=r: outcome.__setitem__(r["order_id"], err))
    p.flush(15)
for r in records:
    err = outcome.get(r["order_id"])
    verdict = "ACCEPTED" if err is None else f"REJECTED {err.name()}: {err.str()}"
    print(f"  {json.dumps(r)}\n    -> {verdict}")

print("3. Consume the topic back:")
wanted = {r["order_id"] for r in records if outcome.get(r["order_id"]) is None}
c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{run}", "auto.offset.reset": "earliest"})
c.subscribe([topic])
seen = set()
end = time.time() + 20
while time.time() < end and not wanted <= seen:
    m = c.poll(0.5)
    if m is not None and not m.error():
        oid = json.loads(m.value()).get("order_id", "")
        if oid.endswith(run):
            seen.add(oid)
c.close()
for r in records:
    oid = r["order_id"]
    print(f"  {oid}: {'present' if oid in seen else 'absent'}")

print("4. The payments data product, whose contract is written in ODCS "
      "(policies/contracts/payments-v1.odcs.yaml): a known currency, an amount above 0:")
ptopic = "payments.payment-events.v1"
create(ptopic, 3)
payments = [
    {"payment_id": f"p-{run}-1", "amount": 99.0, "currency": "EUR", "method": "card"},
    {"payment_id": f"p-{run}-2", "amount": 5.0, "currency": "XYZ", "method": "card"},
    {"payment_id": f"p-{run}-3", "amount": 0, "currency": "USD", "method": "transfer"},
]
poutcome = {}
for r in payments:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    p.produce(ptopic, key=r["payment_id"], value=json.dumps(r),
              on_delivery=lambda err, msg, r=r: poutcome.__setitem__(r["payment_id"], err))
    p.flush(15)
for r in payments:
    err = poutcome.get(r["payment_id"])
    verdict = "ACCEPTED" if err is None else f"REJECTED {err.name()}: {err.str()}"
    print(f"  {json.dumps(r)}\n    -> {verdict}")
# The contract's `roles` let `Group:finance-*` read: the consumer group is named accordingly.
c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"finance-demo-{run}",
              "auto.offset.reset": "earliest"})
c.subscribe([ptopic])
wanted = {r["payment_id"] for r in payments if poutcome.get(r["payment_id"]) is None}
seen = set()
end = time.time() + 20
while time.time() < end and not wanted <= seen:
    m = c.poll(0.5)
    if m is not None and not m.error():
        pid = json.loads(m.value()).get("payment_id", "")
        if run in pid:
            seen.add(pid)
c.close()
for r in payments:
    pid = r["payment_id"]
    print(f"  {pid}: {'present' if pid in seen else 'absent'}")
