"""Topic rules on every path that creates or changes a topic, against Apache Kafka with its
default auto.create.topics.enable=true: a producer cannot auto-create a topic the rules would
refuse, and CreatePartitions, AlterConfigs and IncrementalAlterConfigs are held to the same
rules as CreateTopics. Each refusal is checked against what the broker then holds, read directly.
"""

import shutil
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, ResourceType)
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from clients import create_topic
from conftest import ROOT, start_gateway

CONTRACTS = """
contract:
  name: rules-changed
  owner: rules-team
  topic: rules.changed.v1
---
contract:
  name: rules-auto
  owner: rules-team
  topic: rules.auto.v1
---
contract:
  name: rules-auto-py
  owner: rules-team
  topic: rules.auto-py.v1
"""


@pytest.fixture(scope="module")
def ruled(broker, logdir):
    policies = logdir / f"policies-rules-{uuid.uuid4().hex[:6]}"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "contracts" / "rules.yaml").write_text(CONTRACTS)
    gw = start_gateway(broker.bootstrap, logdir, policies=policies)
    yield gw
    assert gw.stop() == 0, gw.log_text()[-3000:]


def exists(bootstrap, topic) -> bool:
    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


def test_a_producer_cannot_auto_create_a_topic_the_rules_would_refuse(ruled, broker):
    # The broker auto-creates: a producer straight to Kafka makes its topic appear.
    direct_topic = f"direct.auto{uuid.uuid4().hex[:8]}.v1"
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 20_000})
    p.produce(direct_topic, b"x")
    assert p.flush(25) == 0
    assert exists(broker.bootstrap, direct_topic), "the broker auto-creates (this test can fail)"

    # Through meshgate: the rules need an explicit partition count (min 3), which
    # auto-creation (num.partitions=1) cannot give, so the topic is never created.
    errors = []
    p = Producer({"bootstrap.servers": ruled.bootstrap, "message.timeout.ms": 6_000})
    p.produce("rules.auto.v1", b"x", on_delivery=lambda e, m: errors.append(e))
    p.flush(15)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() in (KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART), errors
    kp = KafkaProducer(bootstrap_servers=ruled.bootstrap, max_block_ms=5_000)
    with pytest.raises(KafkaTimeoutError):
        kp.send("rules.auto-py.v1", b"x").get(timeout=10)
    kp.close()
    for topic in ["rules.auto.v1", "rules.auto-py.v1"]:
        assert not exists(broker.bootstrap, topic), f"{topic} was auto-created past the rules"

    # Created properly, the same topic works through meshgate.
    create_topic(ruled.bootstrap, "rules.auto.v1", partitions=3)
    p = Producer({"bootstrap.servers": ruled.bootstrap, "message.timeout.ms": 20_000})
    p.produce("rules.auto.v1", b"y")
    assert p.flush(25) == 0


def partitions(bootstrap, topic) -> int:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


def config(bootstrap, topic, key) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(15)[key].value


def outcome(future):
    try:
        future.result(15)
        return None
    except KafkaException as e:
        return e.args[0]


def test_topic_changes_after_creation_are_held_to_the_topic_rules(ruled, broker):
    topic = "rules.changed.v1"
    create_topic(ruled.bootstrap, topic, partitions=3)
    admin = AdminClient({"bootstrap.servers": ruled.bootstrap})

    # CreatePartitions past the maximum (48) is refused; within it, it goes through.
    err = outcome(admin.create_partitions([NewPartitions(topic, 64)])[topic])
    assert err is not None and err.code() == KafkaError.POLICY_VIOLATION, err
    assert "64 partitions" in err.str() and "topics.yaml:" in err.str(), err.str()
    assert partitions(broker.bootstrap, topic) == 3
    assert outcome(admin.create_partitions([NewPartitions(topic, 6)])[topic]) is None
    assert partitions(broker.bootstrap, topic) == 6

    # IncrementalAlterConfigs: infinite retention breaks the 30-day maximum.
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
    err = outcome(admin.incremental_alter_configs([res])[res])
    assert err is not None and err.code() == KafkaError.POLICY_VIOLATION, err
    assert "retention.ms=-1" in err.str(), err.str()
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "bogus", incremental_operation=AlterConfigOpType.APPEND)])
    err = outcome(admin.incremental_alter_configs([res])[res])
    assert err is not None and err.code() == KafkaError.POLICY_VIOLATION, err
    before = config(broker.bootstrap, topic, "retention.ms")
    assert before != "-1"
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
    assert outcome(admin.incremental_alter_configs([res])[res]) is None
    assert config(broker.bootstrap, topic, "retention.ms") == "86400000"

    # The legacy AlterConfigs, which replaces the whole set: judged the same way.
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "99999999999"})
    err = outcome(admin.alter_configs([res])[res])
    assert err is not None and err.code() == KafkaError.POLICY_VIOLATION, err
    deadline = time.time() + 5
    while time.time() < deadline:
        assert config(broker.bootstrap, topic, "retention.ms") == "86400000"
        time.sleep(1)
