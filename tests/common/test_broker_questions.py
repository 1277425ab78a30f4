"""`common.kafka.BrokerQuestions`: the broker watch's questions, answered by the real broker on one kept client."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from support.helpers import produce

from common import kafka
from common.kafka import BrokerQuestions, ensure_topics


async def test_the_record_at_each_offset_is_read_back_and_an_offset_past_the_log_holds_nothing(stack, isolation):
    topic = f"{isolation}.questions"
    await ensure_topics(stack.bootstrap, [topic], partitions=2)
    await produce(stack.bootstrap, topic, [b"first", b"second", b"third"], key=b"one-partition")
    async with BrokerQuestions(stack.bootstrap) as broker:
        partitions = await broker.partitions([topic, f"{isolation}.absent"])
        assert partitions == {topic: [0, 1]}  # a topic the broker lacks is not in the answer, and not created
        at_start = await broker.records_at({TopicPartition(topic, p): 0 for p in (0, 1)}, wait_seconds=1.0)
        [tp] = [t for t, value in at_start.items() if value is not None]  # the partition the key went to
        [other] = [t for t in at_start if t != tp]
        assert at_start[tp] == b"first"
        assert await broker.records_at({tp: 1, other: 0}, wait_seconds=1.0) == {tp: b"second", other: None}
        assert await broker.records_at({tp: 7}, wait_seconds=1.0) == {tp: None}  # past the log's end
        assert (await broker.records_at({TopicPartition(topic, 5): 0}, wait_seconds=1.0)) == {
            TopicPartition(topic, 5): None  # no such partition
        }
        assert f"{isolation}.absent" not in await broker.partitions([f"{isolation}.absent"])


async def test_a_groups_committed_offsets_are_read_without_joining_it(stack, isolation):
    topic, group = f"{isolation}.questions", f"{isolation}.readers"
    await ensure_topics(stack.bootstrap, [topic], partitions=2)
    committer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 4})
    finally:
        await committer.stop()
    async with BrokerQuestions(stack.bootstrap) as broker:
        found = await broker.committed_offsets(group, [TopicPartition(topic, 0), TopicPartition(topic, 1)])
        assert found == {TopicPartition(topic, 0): 4, TopicPartition(topic, 1): None}
        assert await broker.committed_offsets(f"{isolation}.nobody", [TopicPartition(topic, 0)]) == {
            TopicPartition(topic, 0): None
        }


async def test_the_kept_client_answers_again_after_the_broker_restarted_empty(stack, isolation):
    # The watch keeps one client between checks; a restarted broker is a new process on the same port. The first
    # question after it may fail (the old connection is gone); the client is then closed and the next question,
    # on a fresh one, sees the new broker: the records gone.
    topic = f"{isolation}.questions"
    await ensure_topics(stack.bootstrap, [topic], partitions=1)
    await produce(stack.bootstrap, topic, [b"before"], key=b"k")
    tp = TopicPartition(topic, 0)
    async with BrokerQuestions(stack.bootstrap) as broker:
        assert await broker.records_at({tp: 0}) == {tp: b"before"}
        stack.stop_broker()
        stack.start_broker()
        answers: list[object] = []
        for _ in range(3):
            try:
                answers.append(await broker.partitions([topic]))
                break
            except Exception as exc:  # noqa: BLE001 - the connection to the old broker
                answers.append(exc)
        assert answers[-1] == {}, answers  # the restarted broker has no such topic


def test_a_partition_led_by_node_0_is_asked_like_any_other():
    # Kafka numbers its brokers from 0 (Tansu's one node has another id, so the tests above never see a 0): a
    # leader of 0 is a broker, None a partition the metadata lacks, -1 one without a leader.
    assert [kafka._is_node(leader) for leader in (0, 1, None, -1)] == [True, True, False, False]  # noqa: SLF001
