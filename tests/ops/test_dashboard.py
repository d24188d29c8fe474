"""The Grafana dashboard and Prometheus rules only query metrics the exporter really exposes."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from meetingtasks.operations.embedded import free_port
from tests.ops.conftest import Process
from tests.support.processes import ROOT
from tests.support.tools import PROMETHEUS_INSTALL, executable

DASHBOARD = ROOT / "deploy/grafana/dashboards/meetingtasks.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "rate", "irate", "increase", "histogram_quantile",
    "clamp_min", "clamp_max", "absent", "or", "and", "unless", "on", "ignoring", "group_left", "label_values",
    "offset", "bool", "topk", "bottomk", "delta", "deriv", "time", "vector", "scalar",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard_exprs() -> Iterator[str]:
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def alert_exprs() -> Iterator[str]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def metric_names(expr: str) -> set[str]:
    """Series names an expression reads: identifiers outside label matchers, ranges, groupings and calls."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"label_values\(([^,)]*)(,[^)]*)?\)", r"\1", text)  # Grafana: label_values(metric, label)
    text = re.sub(r"(?<![A-Za-z_:])\d+(\.\d+)?([eE][-+]?\d+)?", " ", text)  # numbers, 1e-9 included
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word = match.group(0).rstrip("( ")
        if match.group(1) or word in PROMQL_WORDS or word == "le":
            assert word in PROMQL_WORDS, f"{expr!r}: unknown function {word!r}"
            continue
        names.add(word)
    return names


def exposed_series(url: str) -> set[str]:
    """Sample names of every family the exporter declares (``# TYPE`` lines), samples or not."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def test_every_dashboard_and_alert_query_reads_an_exposed_metric(
    env: dict[str, str], run_process: Callable[..., Process],
) -> None:
    # Given the exporter's declared series
    port = free_port()
    run_process(["meetingtasks", "exporter", "--port", str(port)], env, name="exporter").wait_log("exporter ready")
    exposed = exposed_series(f"http://127.0.0.1:{port}/metrics")

    # When every query of the dashboard and of the alert rules is read
    used: dict[str, set[str]] = {expr: metric_names(expr) for expr in [*dashboard_exprs(), *alert_exprs()]}

    # Then each names at least one metric, and every metric it names is exposed
    assert all(used.values()), [expr for expr, names in used.items() if not names]
    missing = {expr: names - exposed for expr, names in used.items() if names - exposed}
    assert not missing, f"queries read metrics the exporter does not expose: {missing}"


def test_the_dashboard_covers_the_operations_questions() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in ("published", "failed", "queue depth", "queue wait p50", "run time p50", "dead letters",
                  "bridge lag", "gateway sessions", "live workers"):
        assert topic in titles, f"no panel about {topic!r} in: {titles}"
    exprs = list(dashboard_exprs())
    assert any("by (service, priority)" in e for e in exprs)
    panel_ids = [p["id"] for p in board["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # Given the dashboard queries with Grafana's variables filled in, as a rules file
    promtool = executable(("promtool",), "promtool", PROMETHEUS_INSTALL)
    rules: list[dict[str, Any]] = []
    for index, expr in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        filled = expr.replace("$__rate_interval", "1m").replace("$service", ".*")
        rules.append({"record": f"dashboard:query_{index}", "expr": filled})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    # When promtool checks it and the alert rules, Then both parse
    for file in (path, ALERTS):
        checked = subprocess.run([promtool, "check", "rules", str(file)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
