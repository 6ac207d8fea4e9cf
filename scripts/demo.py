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


def produce_each(topic, records, id_field, conf, headers=None):
    """Produces each record with its own producer, so that each is its own batch and gets its
    own verdict; prints the verdicts and returns the ids of the accepted records."""
    outcome = {}
    for r in records:
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **conf})
        p.produce(topic, key=r[id_field], value=json.dumps(r), headers=headers,
                  on_delivery=lambda err, msg, r=r: outcome.__setitem__(r[id_field], err))
        p.flush(15)
    for r in records:
        err = outcome.get(r[id_field])
        verdict = "ACCEPTED" if err is None else f"REJECTED {err.name()}: {err.str()}"
        print(f"  {json.dumps(r)}\n    -> {verdict}")
    return {r[id_field] for r in records if outcome.get(r[id_field]) is None}


def read_back(topic, group, records, id_field, wanted):
    """Reads the topic from the start with `group` until every accepted record of this run
    arrived (or 20 s), and prints whether each record is on the topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = set()
    end = time.time() + 20
    while time.time() < end and not wanted <= seen:
        m = c.poll(0.5)
        if m is not None and not m.error():
            rid = json.loads(m.value()).get(id_field, "")
            if run in rid:
                seen.add(rid)
    c.close()
    for r in records:
        rid = r[id_field]
        print(f"  {rid}: {'present' if rid in seen else 'absent'}")


accepted = produce_each(topic, records, "order_id",
                        {"enable.idempotence": True, "compression.type": "zstd"},
                        headers={"trace-id": run})

print("3. Consume the topic back:")
read_back(topic, f"demo-{run}", records, "order_id", accepted)

print("4. The payments data product, whose contract is written in ODCS "
      "(policies/contracts/payments-v1.odcs.yaml): a known currency, an amount above 0:")
ptopic = "payments.payment-events.v1"
create(ptopic, 3)
payments = [
    {"payment_id": f"p-{run}-1", "amount": 99.0, "currency": "EUR", "method": "card"},
    {"payment_id": f"p-{run}-2", "amount": 5.0, "currency": "XYZ", "method": "card"},
    {"payment_id": f"p-{run}-3", "amount": 0, "currency": "USD", "method": "transfer"},
]
accepted = produce_each(ptopic, payments, "payment_id", {})
# The contract's `roles` let `Group:finance-*` read: the consumer group is named accordingly.
read_back(ptopic, f"finance-demo-{run}", payments, "payment_id", accepted)
