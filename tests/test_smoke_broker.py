from kafka import KafkaProducer

from tests.kafka_helpers import read_topic


def test_broker_round_trip(settings):
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    for i in range(10):
        producer.send(settings.topics.alerts, value=str(i).encode())
    producer.flush()
    producer.close()
    messages = read_topic(settings, settings.topics.alerts, count=10, timeout_s=30)
    assert sorted(int(m.value) for m in messages) == list(range(10))
