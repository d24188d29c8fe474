"""A real Prometheus server scrapes the exporter and answers a PromQL query about real task runs."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import free_port
from meetingtasks.store.platform import Platform
from tests.ops.conftest import Process
from tests.support.tools import PROMETHEUS_INSTALL, executable
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: it drives an external tool and waits for its scrapes and exports.
pytestmark = pytest.mark.slow


def prometheus_binary() -> str:
    found = executable(("prometheus",), "the prometheus server", PROMETHEUS_INSTALL)
    return found


def query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_the_exporter_and_answers_promql(
    platform: Platform, env: dict[str, str], tmp_path: Path, run_process: Callable[..., Process],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given the exporter and a Prometheus server scraping it every second
    binary = prometheus_binary()
    exporter_port, prom_port = free_port(), free_port()
    run_process(["meetingtasks", "exporter", "--port", str(exporter_port)], env, name="exporter") \
        .wait_log("exporter ready")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: meetingtasks\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    run_process([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], env, name="prometheus")
    base = f"http://127.0.0.1:{prom_port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(ready, 60, interval_s=0.2, message="prometheus to be ready")

    # When a worker runs five tasks
    start_worker("ai")
    d = Dispatcher(platform)
    for handle in [d.dispatch("t_echo", {"tag": f"p{i}"}) for i in range(5)]:
        handle.wait(timeout=60)

    # Then PromQL over the scraped series sees them, by service and priority
    promql = 'sum by (service, priority) (meetingtasks_tasks_succeeded_total{type="t_echo"})'

    def answered() -> list[dict[str, object]] | None:
        result = query(base, promql)
        return result if result and float(result[0]["value"][1]) == 5 else None  # type: ignore[index]

    result = wait_for(answered, 60, interval_s=0.5, message=f"prometheus to answer {promql} with 5")
    assert result[0]["metric"] == {"service": "ai", "priority": "normal"}  # type: ignore[index]
    # and the target is healthy
    targets = json.loads(urllib.request.urlopen(f"{base}/api/v1/targets", timeout=10).read())
    assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]
