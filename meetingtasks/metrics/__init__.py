"""Prometheus metrics of the platform, served by ``meetingtasks exporter``.

Task counters and histograms (labels ``service``, ``type``, ``priority``), counted from the status feed:

==============================================  =========  ==================================================
metric                                          type       meaning
==============================================  =========  ==================================================
``meetingtasks_tasks_published_total``          counter    accepted by the dispatcher (queued or scheduled)
``meetingtasks_tasks_started_total``            counter    runs started (each attempt)
``meetingtasks_tasks_succeeded_total``          counter    finished successfully
``meetingtasks_tasks_failed_total``             counter    failed permanently (PermanentError)
``meetingtasks_tasks_retried_total``            counter    attempts sent back for a retry
``meetingtasks_tasks_dead_lettered_total``      counter    moved to the dead-letter queue
``meetingtasks_tasks_cancelled_total``          counter    cancelled
``meetingtasks_tasks_timed_out_total``          counter    stopped by their time limit
``meetingtasks_task_run_seconds``               histogram  run time of one attempt
``meetingtasks_task_queue_wait_seconds``        histogram  time in the queue once runnable
``meetingtasks_status_events_total``            counter    status events received (label ``status``)
==============================================  =========  ==================================================

Read from Redis at each scrape (see :mod:`meetingtasks.metrics.collector`):

- ``meetingtasks_redis_up``, ``meetingtasks_scrape_redis_seconds``;
- queues (labels ``service``, ``priority``, ``queue``): ``meetingtasks_queue_depth``,
  ``meetingtasks_queue_unacked``, ``meetingtasks_scheduled_tasks``, ``meetingtasks_dead_letters``;
- worker liveness (labels ``service``, ``worker``; see :mod:`meetingtasks.metrics.heartbeat`):
  ``meetingtasks_worker_up``, ``meetingtasks_worker_heartbeat_age_seconds``,
  ``meetingtasks_worker_active_tasks``, ``meetingtasks_worker_tasks_processed_total``, and
  ``meetingtasks_workers_alive`` (label ``service``);
- event streams (label ``channel``): ``meetingtasks_event_stream_length``, ``meetingtasks_event_stream_cap``,
  ``meetingtasks_event_stream_over_cap`` (1 while longer than ``stream_maxlen``), ``meetingtasks_bridge_lag``,
  ``meetingtasks_bridge_pending``, ``meetingtasks_bridge_consumers``;
- bridges (label ``bridge``, from ``P bridges``): ``meetingtasks_bridge_events_processed_total``,
  ``meetingtasks_bridge_tasks_triggered_total``, ``meetingtasks_bridge_duplicates_total``,
  ``meetingtasks_bridge_subscription_failures_total``, ``meetingtasks_bridge_dead_letters_total``,
  ``meetingtasks_bridge_events_appended_total``, ``meetingtasks_bridge_up``, ``meetingtasks_bridges_alive``;
- gateways (label ``gateway``, from ``P gateway:<instance>`` via ``P gateways``):
  ``meetingtasks_gateway_sessions``, ``meetingtasks_gateway_tasks_followed``,
  ``meetingtasks_gateway_<counter>_total`` for each counter in
  :data:`meetingtasks.metrics.collector.GATEWAY_COUNTERS` (pushes, submits, sessions opened ...),
  ``meetingtasks_gateways_alive``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Exporter"]


def __getattr__(name: str) -> Any:
    # Lazy: workers import the heartbeat step from this package and need neither prometheus_client nor Redis
    # readers of the exporter.
    if name == "Exporter":
        from meetingtasks.metrics.exporter import Exporter

        return Exporter
    raise AttributeError(name)
