"""tansu 0.6.0 as the upstream: a smoke subset, since users may run meshgate in front of it.

The suite of record runs against Apache Kafka; these tests check that the same promises hold in
front of tansu: exact produce and consume, a rejected record absent and the accepted ones present
once, only gateway addresses handed out, and what tansu's own limits do to a producer after a
rejection (documented, not worked around).
"""

import json
import uuid

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from clients import consume, create_topic, produce
from conftest import start_gateway

CONTRACT = """
contract:
  name: smoke-orders
  owner: smoke-team
  topic: smoke.orders.v1
  schema:
    format: json
    definition: {"type": "record", "name": "O", "fields": [
      {"name": "id", "type": "string"}, {"name": "total", "type": "double"}]}
  quality:
    validity_rules:
      - total > 0
"""


def order(run, i, total=5.0) -> bytes:
    return json.dumps({"id": f"{run}-{i}", "total": total}).encode()


def test_tansu_smoke(tansu, logdir, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "smoke.yaml").write_text(CONTRACT)
    gw = start_gateway(tansu.bootstrap, logdir, policies=policies)
    try:
        run = uuid.uuid4().hex[:8]
        # Exact produce and consume through meshgate, on an ungoverned topic.
        plain = f"smoke.plain{run}.v1"
        create_topic(gw.bootstrap, plain)
        values = [f"v-{i}".encode() for i in range(200)]
        reports = produce(gw.bootstrap, plain, values, extra={"enable.idempotence": True})
        assert [e for _, e in reports if e is not None] == []
        assert sorted(consume(gw.bootstrap, [plain], len(values))) == sorted(values)

        # Clients only ever learn gateway addresses.
        md = AdminClient({"bootstrap.servers": gw.bootstrap}).list_topics(timeout=10)
        assert {b.port for b in md.brokers.values()} <= set(range(gw.port, gw.port + 300))

        # A contract rejection: absent from the topic; the accepted records present once.
        create_topic(gw.bootstrap, "smoke.orders.v1")
        mixed = [order(run, 0), order(run, 1, total=0), order(run, 2)]
        # One batch each: a batch is accepted or refused whole.
        reports = [r for v in mixed for r in produce(
            gw.bootstrap, "smoke.orders.v1", [v], extra={"enable.idempotence": False, "retries": 0})]
        codes = {v: (e.code() if e else None) for v, e in reports}
        assert codes == {mixed[0]: None, mixed[1]: KafkaError.INVALID_RECORD, mixed[2]: None}, codes
        got = [v for v in consume(gw.bootstrap, ["smoke.orders.v1"], 2) if run.encode() in v]
        assert sorted(got) == sorted([order(run, 0), order(run, 2)])

        # tansu 0.6.0 refuses the epoch librdkafka bumps after a gap in its sequence (KIP-360)
        # with PRODUCER_FENCED, where Apache Kafka accepts it: later records of that producer
        # instance fail, and a new instance works. meshgate's rejection is no worse here than
        # tansu's own INVALID_RECORD would be.
        p = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all", "enable.idempotence": True})
        out = []
        for v in [order(run, 10), order(run, 11, total=0), order(run, 12)]:
            box = []
            p.produce("smoke.orders.v1", value=v, partition=0, on_delivery=lambda e, m: box.append(e))
            p.flush(15)
            out.append(box[0].code() if box[0] else None)
        assert out == [None, KafkaError.INVALID_RECORD, KafkaError.PRODUCER_FENCED], out
        fresh = Producer({"bootstrap.servers": gw.bootstrap, "acks": "all",
                          "enable.idempotence": True})
        box = []
        fresh.produce("smoke.orders.v1", value=order(run, 13), partition=0,
                      on_delivery=lambda e, m: box.append(e))
        fresh.flush(15)
        assert box == [None]
    finally:
        assert gw.stop() == 0
