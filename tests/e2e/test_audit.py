"""The audit trail end to end, against Apache Kafka: every governance decision (a refusal, a
shadowed would-reject) and every administrative request that passes through is one hash-chained
JSON line naming the principal, the client, the resource, the decision and the policy version;
`meshgate audit verify` accepts the file, and refuses it once one line is edited. No record value
reaches the trail or the log.
"""

import json
import shutil
import subprocess
import uuid

from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, ResourcePatternType, ResourceType)

from clients import create_topic
from conftest import ROOT, start_gateway

CONTRACTS = """
contract:
  name: audit-enforced
  owner: audit-team
  topic: audit.enforced.v1
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0]
---
contract:
  name: audit-shadow
  owner: audit-team
  topic: audit.shadow.v1
  mode: shadow
  schema: { format: json, file: schemas/order-events-v1.avsc }
  quality:
    validity_rules: [order_total > 0]
"""


def send_one(bootstrap, topic, value):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                  "retries": 0, "client.id": "audit-producer"})
    box = []
    p.produce(topic, value=value, partition=0, on_delivery=lambda err, msg: box.append(err))
    p.flush(15)
    return box[0] if box else "undelivered"


def events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_decision_and_admin_request_is_chained_in_the_audit_trail(broker, logdir, tmp_path):
    run = uuid.uuid4().hex[:8]
    secret = f"pii-marker-{run}"
    policies = tmp_path / "policies"
    (policies / "contracts").mkdir(parents=True)
    shutil.copytree(ROOT / "policies" / "contracts" / "schemas", policies / "contracts" / "schemas")
    shutil.copy(ROOT / "policies" / "platform" / "naming.yaml", policies / "naming.yaml")
    (policies / "contracts" / "audit.yaml").write_text(CONTRACTS)
    trail = tmp_path / "audit.jsonl"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"audit:\n  file: {trail}\n")
    gw = start_gateway(broker.bootstrap, logdir, policies=policies, extra_args=["--config", str(config)])
    try:
        for t in ["audit.enforced.v1", "audit.shadow.v1"]:
            create_topic(gw.bootstrap, t, partitions=3)
        bad = json.dumps({"order_id": run, "customer_id": secret, "order_total": -1}).encode()
        refused = send_one(gw.bootstrap, "audit.enforced.v1", bad)
        assert isinstance(refused, KafkaError) and refused.code() == KafkaError.INVALID_RECORD
        assert send_one(gw.bootstrap, "audit.shadow.v1", bad) is None

        admin = AdminClient({"bootstrap.servers": gw.bootstrap, "client.id": "audit-admin"})
        bad_name, good_name = f"Bad_{run}", f"audit.t{run}.v1"
        fs = admin.create_topics([NewTopic(bad_name, 3, 1), NewTopic(good_name, 3, 1)])
        assert fs[bad_name].exception(15).args[0].code() == KafkaError.POLICY_VIOLATION
        assert fs[good_name].result(15) is None
        admin.create_partitions([NewPartitions(good_name, 6)])[good_name].result(15)
        res = ConfigResource(ResourceType.TOPIC, good_name, incremental_configs=[
            ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(15)
        admin.delete_records([TopicPartition(good_name, 0, 0)])
        # Kafka runs without an authorizer here, so it refuses ACL changes: they still pass
        # through meshgate, and are recorded as forwarded.
        acl = AclBinding(ResourceType.TOPIC, good_name, ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
        for f in admin.create_acls([acl]).values():
            f.exception(15)
        flt = AclBindingFilter(ResourceType.TOPIC, good_name, ResourcePatternType.LITERAL, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
        for f in admin.delete_acls([flt]).values():
            f.exception(15)
        admin.delete_topics([good_name])[good_name].result(15)
        policy_hash = next(line.split('hash="')[1].split('"')[0]
                           for line in gw.metrics().splitlines()
                           if line.startswith("meshgate_policy_info{"))
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]

    got = events(trail)
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))

    def one(**want):
        found = [e for e in got if all(e.get(k) == v for k, v in want.items())]
        assert found, f"no event with {want} in {json.dumps(got, indent=1)}"
        return found[0]

    r = one(api="produce", decision="rejected", resource="audit.enforced.v1-0")
    assert (r["policy"], r["rule"], r["client_id"]) == ("contract", "order_total > 0", "audit-producer")
    assert r["principal"] == "User:ANONYMOUS"
    assert r["client_addr"].startswith("127.0.0.1:")
    assert r["generation"] == 1 and r["policy_hash"] == policy_hash
    w = one(api="produce", decision="would_reject", resource="audit.shadow.v1-0")
    assert (w["rule"], w["mode"]) == ("order_total > 0", "shadow")
    one(api="create_topics", decision="rejected", resource=bad_name, policy="naming")
    one(api="create_topics", decision="forwarded", resource=good_name, client_id="audit-admin")
    one(api="create_partitions", decision="forwarded", resource=good_name)
    one(api="incremental_alter_configs", decision="forwarded", resource=good_name)
    one(api="delete_records", decision="forwarded", resource=f"{good_name}-0 before offset 0")
    assert one(api="create_acls", decision="forwarded")["resource"].startswith("acl:resource_type=2:" + good_name)
    one(api="delete_acls", decision="forwarded")
    one(api="delete_topics", decision="forwarded", resource=good_name)

    text = trail.read_text()
    assert secret not in text, "no record value in the audit trail"
    assert secret not in gw.log_text(), "no record value in the log"

    meshgate = str(ROOT / "target" / "debug" / "meshgate")
    ok = subprocess.run([meshgate, "audit", "verify", str(trail)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"ok: {len(got)} event(s)"), ok.stdout

    lines = text.splitlines(keepends=True)
    lines[2] = lines[2].replace('"decision":"', '"decision":"x', 1)
    trail.write_text("".join(lines))
    broken = subprocess.run([meshgate, "audit", "verify", str(trail)], capture_output=True, text=True)
    assert broken.returncode == 1
    assert f"{trail}:3: the line's hash does not match its content" in broken.stdout, broken.stdout
