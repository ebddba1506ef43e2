"""Prometheus helpers: the lag probe through the real broker, and the
endpoint's bind address setting."""

from __future__ import annotations

import urllib.request

from kafka import KafkaConsumer, KafkaProducer

from driftline import observability
from driftline.broker import free_port
from driftline.observability import LagProbe
from tests.conftest import FAST_GROUP


def test_lag_probe_reports_committed_vs_end_offsets(settings):
    topic = settings.topics.alerts
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    for i in range(10):
        # one record per batch: tansu's end offsets count batches, not records (DESIGN.md)
        producer.send(topic, b"{}", partition=0)
        producer.flush()
    producer.close()
    group = settings.topic_prefix + "lag-test"
    probe = LagProbe(settings, group, [topic], "test", interval_s=1)
    try:
        before = probe.update()
        assert before[(topic, 0)] == 10 and before[(topic, 1)] == 0  # nothing committed yet
        consumer = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap_list, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=4,
                                 **FAST_GROUP)
        try:
            got = []
            while len(got) < 4:
                for records in consumer.poll(timeout_ms=500, max_records=4).values():
                    got.extend(records)
            consumer.commit()
        finally:
            consumer.close()
        after = probe.update()
        assert after[(topic, 0)] == 10 - len(got)
        sample = observability.REGISTRY.get_sample_value(
            "driftline_consumer_lag", {"component": "test", "topic": topic, "partition": "0"})
        assert sample == 10 - len(got)
    finally:
        probe.stop()


def test_metrics_endpoint_binds_to_the_configured_address(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_METRICS_ADDR", "127.0.0.1")
    port = free_port()
    assert observability.start_metrics_server(port) == port
    observability.EVENTS_PROCESSED.labels("test", "prediction").inc()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'driftline_events_processed_total{component="test",kind="prediction"}' in text
