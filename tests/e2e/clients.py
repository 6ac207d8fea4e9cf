"""Small client helpers shared by the end-to-end tests. They wrap the real client libraries and
add nothing but waiting and bookkeeping."""

import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, name: str, partitions: int = 3, config=None, conf=None):
    """`conf`: extra client settings (TLS, SASL)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(conf or {})})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=config or {})])
    futures[name].result(15)
    wait_for_topic(bootstrap, name, partitions, conf)


def wait_for_topic(bootstrap: str, name: str, partitions: int, conf=None):
    admin = AdminClient({"bootstrap.servers": bootstrap, **(conf or {})})
    end = time.time() + 15
    while time.time() < end:
        md = admin.list_topics(timeout=5)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.2)
    raise TimeoutError(f"topic {name} not visible")


def produce(bootstrap: str, topic: str, values, extra=None, key=None):
    """Produces `values` and returns the delivery reports as (value, error) pairs."""
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 5}
    conf.update(extra or {})
    p = Producer(conf)
    reports = []

    def on_delivery(err, msg):
        reports.append((msg.value(), err))

    for i, v in enumerate(values):
        p.produce(topic, value=v, key=key(i) if key else None, on_delivery=on_delivery)
        p.poll(0)
    remaining = p.flush(30)
    assert remaining == 0, f"{remaining} records never delivered"
    return reports


def consume(bootstrap: str, topics, expected: int, group: str | None = None, settle: float = 2.0,
            timeout: float = 45.0, extra=None):
    """Reads with a consumer group until `expected` records arrived, then keeps polling for
    `settle` seconds so that duplicates or extras would show. Returns the values read."""
    conf = {"bootstrap.servers": bootstrap, "group.id": group or f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    conf.update(extra or {})
    c = Consumer(conf)
    c.subscribe(list(topics))
    values = []
    end = time.time() + timeout
    settle_until = None
    try:
        while time.time() < end:
            m = c.poll(0.5)
            if m is not None:
                if m.error():
                    raise KafkaException(m.error())
                values.append(m.value())
            if len(values) >= expected and settle_until is None:
                settle_until = time.time() + settle
            if settle_until is not None and time.time() >= settle_until:
                break
        if values:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return values
