"""The Prometheus exporter, scraped over HTTP while real workers run real tasks."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import free_port
from meetingtasks.store.platform import Platform
from tests.ops.conftest import Process, scrape, value
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

FAST_HEARTBEAT = {"MEETINGTASKS_HEARTBEAT_INTERVAL_S": "0.2"}


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_exporter(run_process: Callable[..., Process], env: dict[str, str]) -> str:
    port = free_port()
    run_process(["meetingtasks", "exporter", "--port", str(port)], env, name="exporter").wait_log("exporter ready")
    return f"http://127.0.0.1:{port}/metrics"


@pytest.mark.slow
def test_task_outcomes_are_counted_by_service_type_and_priority(
    platform: Platform, env: dict[str, str], run_process: Callable[..., Process],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given an exporter and a worker of the ai service
    url = start_exporter(run_process, env)
    start_worker("ai", env_overrides=FAST_HEARTBEAT)
    d = Dispatcher(platform)

    # When tasks succeed, fail permanently, succeed after a retry and exhaust their retries
    handles = [d.dispatch("t_echo", {"tag": f"e{i}"}) for i in range(3)]
    handles.append(d.dispatch("t_echo", {"tag": "hi"}, priority="high"))
    permanent = d.dispatch("t_permanent", {"tag": "p"})
    flaky = d.dispatch("t_flaky", {"tag": "f", "fail_times": 1})
    doomed = d.dispatch("t_always_fails", {"tag": "x"})
    for handle in [*handles, flaky]:
        handle.wait(timeout=60)
    wait_for(lambda: permanent.status() == "FAILED" and doomed.status() == "DEAD_LETTERED", 60,
             message="the failing tasks to finish")

    # Then the scrape shows each outcome under its labels
    def counted() -> dict[str, float] | None:
        s = scrape(url)
        got = {
            "published_echo_normal": value(s, "meetingtasks_tasks_published_total", type="t_echo", priority="normal"),
            "published_echo_high": value(s, "meetingtasks_tasks_published_total", type="t_echo", priority="high"),
            "succeeded_echo": value(s, "meetingtasks_tasks_succeeded_total", service="ai", type="t_echo"),
            "succeeded_flaky": value(s, "meetingtasks_tasks_succeeded_total", type="t_flaky"),
            "retried_flaky": value(s, "meetingtasks_tasks_retried_total", type="t_flaky"),
            "started_flaky": value(s, "meetingtasks_tasks_started_total", type="t_flaky"),
            "failed_permanent": value(s, "meetingtasks_tasks_failed_total", type="t_permanent"),
            "dead_doomed": value(s, "meetingtasks_tasks_dead_lettered_total", type="t_always_fails"),
            "retried_doomed": value(s, "meetingtasks_tasks_retried_total", type="t_always_fails"),
            "run_count_echo": value(s, "meetingtasks_task_run_seconds_count", type="t_echo"),
            "wait_count_echo": value(s, "meetingtasks_task_queue_wait_seconds_count", type="t_echo"),
            "dead_letters_gauge": value(s, "meetingtasks_dead_letters", service="ai"),
        }
        return got if got["dead_doomed"] and got["dead_letters_gauge"] else None

    got = wait_for(counted, 20, message="the exporter to count the outcomes")
    assert got == {
        "published_echo_normal": 3, "published_echo_high": 1, "succeeded_echo": 4, "succeeded_flaky": 1,
        "retried_flaky": 1, "started_flaky": 2, "failed_permanent": 1, "dead_doomed": 1, "retried_doomed": 2,
        "run_count_echo": 4, "wait_count_echo": 4, "dead_letters_gauge": 1,
    }


def test_queue_gauges_show_waiting_scheduled_and_dead_work(
    platform: Platform, env: dict[str, str], run_process: Callable[..., Process],
) -> None:
    # Given tasks waiting for a user worker that is not running, and one scheduled for later
    url = start_exporter(run_process, env)
    d = Dispatcher(platform)
    for i in range(2):
        d.dispatch("user_status_change", {"user_id": f"u{i}", "status": "online"}, priority="critical")
    d.dispatch("t_echo", {"tag": "later"}, delay=600)

    # When Prometheus scrapes
    s = scrape(url)

    # Then each queue reports its own depth, and the delayed set its scheduled task
    assert value(s, "meetingtasks_queue_depth", queue="user.critical") == 2
    assert value(s, "meetingtasks_queue_depth", service="user", priority="low") == 0
    assert value(s, "meetingtasks_scheduled_tasks", queue="ai.normal") == 1
    assert value(s, "meetingtasks_redis_up") == 1
    # The published counter follows the status feed (pub/sub), which can reach the exporter after the first scrape.
    wait_for(lambda: value(scrape(url), "meetingtasks_tasks_published_total", type="user_status_change",
                           priority="critical") == 2, message="the exporter to count both dispatches")


@pytest.mark.slow
def test_worker_liveness_follows_the_consumer_heartbeat(
    platform: Platform, r: redis.Redis, env: dict[str, str], run_process: Callable[..., Process],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a running ai worker that has processed a task
    url = start_exporter(run_process, env)
    worker = start_worker("ai", env_overrides=FAST_HEARTBEAT)
    Dispatcher(platform).dispatch("t_echo", {"tag": "alive"}).wait(timeout=30)

    def alive() -> bool:
        s = scrape(url)
        return (value(s, "meetingtasks_workers_alive", service="ai") == 1
                and value(s, "meetingtasks_worker_tasks_processed_total", service="ai") >= 1)

    wait_for(alive, 20, message="the worker to report alive with one processed task")
    assert value(scrape(url), "meetingtasks_workers_alive", service="user") == 0

    # When the worker is killed without a chance to say goodbye
    worker.kill()

    # Then its heartbeat goes stale and the exporter reports it down
    def down() -> bool:
        s = scrape(url)
        return (value(s, "meetingtasks_worker_up", service="ai") == 0
                and value(s, "meetingtasks_workers_alive", service="ai") == 0
                and value(s, "meetingtasks_worker_heartbeat_age_seconds", service="ai") > 0.6)

    wait_for(down, 20, message="the killed worker to be reported down")


def test_a_redis_outage_is_reported_not_crashed(env: dict[str, str], run_process: Callable[..., Process]) -> None:
    # Given an exporter pointed at a Redis that is not there
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    url = start_exporter(run_process, {**env, "MEETINGTASKS_REDIS_URL": dead_url})

    # When scraped, Then it answers with redis_up 0 instead of an error page
    s = scrape(url)
    assert value(s, "meetingtasks_redis_up") == 0
    assert ("meetingtasks_queue_depth", ()) not in s


@pytest.mark.slow
def test_bridge_throughput_and_lag_are_exported(
    platform: Platform, env: dict[str, str], run_process: Callable[..., Process],
) -> None:
    from meetingtasks.events import publish_event

    # Given the exporter and a running bridge that reports its counters
    url = start_exporter(run_process, env)
    bridge = run_process(["meetingtasks", "bridge"], {**env, **FAST_HEARTBEAT}, name="bridge")
    wait_for(lambda: value(scrape(url), "meetingtasks_bridges_alive") == 1, 30, message="the bridge to report")

    # When four events are published while it runs
    for i in range(4):
        publish_event("ai_events", "audio_denoising.completed", {"n": i}, source="tests")

    # Then the exporter shows them processed, with no lag
    def processed() -> bool:
        s = scrape(url)
        return (value(s, "meetingtasks_bridge_events_processed_total") == 4
                and value(s, "meetingtasks_bridge_lag", channel="ai_events") == 0
                and value(s, "meetingtasks_event_stream_length", channel="ai_events") == 4)

    wait_for(processed, 30, message="four events processed by the bridge")

    # When the bridge stops and three more events arrive
    assert bridge.stop() == 0
    for i in range(3):
        publish_event("ai_events", "audio_denoising.completed", {"n": 10 + i}, source="tests")

    # Then they show as lag, and no bridge is alive
    s = scrape(url)
    assert value(s, "meetingtasks_bridge_lag", channel="ai_events") == 3
    assert value(s, "meetingtasks_bridge_lag", channel="user_events") == 0
    assert value(s, "meetingtasks_bridges_alive") == 0


@pytest.mark.slow
def test_gateway_sessions_and_pushes_are_exported(
    platform: Platform, env: dict[str, str], run_process: Callable[..., Process],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    import json as _json

    from websockets.sync.client import connect

    from meetingtasks.gateway.tokens import mint_token

    # Given the exporter, an ai worker and a gateway with one connected client
    secret = "ops-test-gateway-secret-0123456789"
    url = start_exporter(run_process, env)
    start_worker("ai")
    port = free_port()
    run_process(["meetingtasks", "gateway", "--port", str(port)],
                {**env, "MEETINGTASKS_GATEWAY_SECRET": secret}, name="gateway")
    wait_for(lambda: healthy(f"http://127.0.0.1:{port}/healthz"), 30, message="the gateway to be healthy")
    token = mint_token(secret, "ops-client", ttl_s=600)
    with connect(f"ws://127.0.0.1:{port}/ws?token={token}", open_timeout=10) as ws:
        # When the client submits a task and follows it to the end
        ws.send(_json.dumps({"op": "submit", "ref": "r1", "type": "t_echo", "payload": {"tag": "ws"}}))
        frames = []
        while not frames or frames[-1].get("status") != "SUCCEEDED":
            frames.append(_json.loads(ws.recv(timeout=30)))

        # Then, while it is connected, the exporter counts one session and the pushes it received
        def exported() -> bool:
            s = scrape(url)
            return (value(s, "meetingtasks_gateway_sessions") == 1
                    and value(s, "meetingtasks_gateway_pushes_total") >= 1
                    and value(s, "meetingtasks_gateway_submits_total") == 1
                    and value(s, "meetingtasks_gateways_alive") == 1)

        wait_for(exported, 30, interval_s=0.5, message="the gateway counters in the exporter")
