"""The broker's Celery settings, chosen from the broker URL alone (CONTRACT §10)."""

from __future__ import annotations

import pytest
from celery.utils.quorum_queues import detect_quorum_queues
from kombu.transport.native_delayed_delivery import calculate_routing_key

from orchestrator.celery_app import create_celery, is_rabbitmq
from orchestrator.tasks import job_chain, whole_seconds


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@rabbit:5672//", "amqps://u:p@rabbit/vh", "pyamqp://rabbit//"]
)
def test_a_rabbitmq_url_turns_on_native_delayed_delivery(make_settings, url: str) -> None:
    app = create_celery(make_settings(celery_broker_url=url))
    conf = app.conf
    assert is_rabbitmq(url)
    assert conf.task_default_queue_type == "quorum"
    assert conf.task_default_exchange_type == "topic"
    assert conf.broker_transport_options == {"confirm_publish": True}
    queue = app.amqp.queues["orchestrator"]
    assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert queue.exchange.type == "topic"
    # What Celery checks before it routes a countdown through the delay queues.
    assert detect_quorum_queues(app, "amqp") == (True, "orchestrator")


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@h:6380/1"])
def test_a_redis_broker_keeps_its_visibility_timeout_and_classic_queues(
    make_settings, url: str
) -> None:
    settings = make_settings(redis_url=url, broker_visibility_timeout=5000)
    app = create_celery(settings)
    assert not is_rabbitmq(url)
    assert app.conf.broker_transport_options == {"visibility_timeout": 5000}
    assert app.conf.task_default_queue_type == "classic"
    assert detect_quorum_queues(app, "redis") == (False, "")


def test_the_web_app_and_the_worker_declare_the_same_queue(make_settings) -> None:
    """Every process builds its app in create_celery: one queue declaration for all."""
    settings = make_settings(celery_broker_url="amqp://rabbit//")
    web, worker = create_celery(settings), create_celery(settings)
    assert web.amqp.queues["orchestrator"].as_dict(recurse=True) == worker.amqp.queues[
        "orchestrator"
    ].as_dict(recurse=True)


@pytest.mark.parametrize(
    ("seconds", "whole"), [(0, 0), (0.0, 0), (0.05, 1), (0.3, 1), (1.0, 1), (2.0, 2), (2.01, 3)]
)
def test_countdowns_round_up_to_whole_seconds(seconds: float, whole: int) -> None:
    assert whole_seconds(seconds) == whole


def test_a_countdown_under_a_second_would_not_publish_on_rabbitmq_unrounded() -> None:
    # Celery routes by int(countdown): 0.3 s gives 0, which kombu refuses.
    with pytest.raises(ValueError):
        calculate_routing_key(int(0.3), "orchestrator")
    assert calculate_routing_key(whole_seconds(0.3), "orchestrator").endswith(".1.orchestrator")


def test_the_settle_countdown_is_sent_in_whole_seconds(make_settings) -> None:
    settings = make_settings(robot_settle_seconds=0.3)
    chain = job_chain(create_celery(settings), "job-1", settings)
    assert chain.tasks[2].options["countdown"] == 1
