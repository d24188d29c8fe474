"""docker-compose.yml and the Dockerfile, validated without a Docker engine: files, commands, settings, ports."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml

from meetingtasks.cli.main import cli
from meetingtasks.core.sentinel import SentinelUrl
from meetingtasks.core.settings import ENV_PREFIX, Settings
from meetingtasks.operations.embedded import RedisServer, find_redis_server, free_port
from meetingtasks.services import SERVICES
from tests.support.processes import ROOT
from tests.support.tools import PROMETHEUS_INSTALL, executable
from tests.support.waiting import wait_for

COMPOSE = ROOT / "docker-compose.yml"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}")


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def ours() -> dict[str, dict[str, Any]]:
    """Services running our image (built from the Dockerfile)."""
    return {name: svc for name, svc in services().items() if svc.get("build")}


def published_ports(svc: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in svc.get("ports", [])}


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_the_file_is_a_compose_project_with_every_part() -> None:
    svcs = services()
    assert {f"worker-{s}" for s in SERVICES} <= set(svcs)
    for part in ("redis", "beat", "bridge", "gateway", "flower", "exporter", "prometheus", "grafana"):
        assert part in svcs, f"no {part} service"
    assert svcs["beat"]["deploy"]["replicas"] == 2
    for name, svc in svcs.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
        assert "command" in svc or name == "grafana", f"{name}: no command"


def test_redis_is_durable_password_protected_and_health_checked() -> None:
    redis_svc = services()["redis"]
    command = redis_svc["command"]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "everysec"
    assert INTERPOLATION.fullmatch(option(command, "--requirepass") or ""), "the password must come from the env"
    assert redis_svc["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert any(str(v).startswith("redis-data:/data") for v in redis_svc["volumes"])
    for name, svc in ours().items():
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        url = svc["environment"]["MEETINGTASKS_REDIS_URL"]
        # the `ha` profile's URL when set, else the one Redis
        assert url.startswith("${MEETINGTASKS_REDIS_URL:-redis://:${REDIS_PASSWORD"), name
        assert url.endswith("@redis:6379/0}"), name


def test_every_command_is_a_real_subcommand_with_real_options() -> None:
    for name, svc in ours().items():
        argv = list(svc["command"])
        if argv[0] == "meetingtasks":
            command = cli.commands.get(argv[1])
            assert command is not None, f"{name}: `meetingtasks {argv[1]}` does not exist"
            # click parses the arguments exactly as the container would, without running the command
            try:
                command.make_context(argv[1], argv[2:])
            except click.UsageError as exc:
                pytest.fail(f"{name}: {' '.join(argv)}: {exc}")
        elif argv[0] == "celery":
            assert argv[1] == "-A" and argv[3] == "flower", f"{name}: unexpected celery command {argv}"
            module, _, attribute = argv[2].partition(":")
            # The compose file gives Flower its basic auth through the environment; so does this check.
            with pytest.MonkeyPatch.context() as env:
                env.setenv("MEETINGTASKS_FLOWER_BASIC_AUTH", "compose:check")
                assert hasattr(importlib.import_module(module), attribute or "app"), f"{name}: no Celery app {argv[2]}"
            from flower.options import options

            for arg in argv[4:]:
                flag = arg.split("=", 1)[0].lstrip("-").replace("-", "_")
                assert flag in options._options or flag.replace("_", "-") in options._options, f"{name}: {arg}"
        else:
            pytest.fail(f"{name}: command {argv} is neither meetingtasks nor celery")
    workers = {svc["command"][2] for name, svc in ours().items() if svc["command"][1:2] == ["worker"]}
    assert workers == set(SERVICES)


def test_environment_names_are_real_settings() -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, svc in ours().items():
        for env_name in svc.get("environment", {}):
            assert env_name in fields, f"{name}: {env_name} is not a setting (known: MEETINGTASKS_<field>)"
    # every ${VAR} the file needs is documented in the example env file
    example = (ROOT / "deploy/env.example").read_text()
    required = {m.group(1) for m in INTERPOLATION.finditer(COMPOSE.read_text()) if (m.group(2) or "").startswith(":?")}
    for variable in required:
        assert re.search(rf"^{variable}=", example, re.M), f"{variable} is required but not in deploy/env.example"


def test_ports_agree_between_commands_scrape_config_and_datasource() -> None:
    svcs = services()
    exporter_port = int(option(svcs["exporter"]["command"], "--port") or 0)
    gateway_port = int(option(svcs["gateway"]["command"], "--port") or 0)
    flower_port = int(option(svcs["flower"]["command"], "--port") or 0)
    assert exporter_port in published_ports(svcs["exporter"])
    assert gateway_port in published_ports(svcs["gateway"])
    assert flower_port in published_ports(svcs["flower"])
    for part in ("exporter", "gateway", "flower"):
        command = svcs[part]["command"]
        assert (option(command, "--host") or option(command, "--address")) == "0.0.0.0", f"{part} must listen on all"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"exporter:{exporter_port}"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert 9090 in published_ports(svcs["prometheus"])
    assert svcs["flower"]["environment"]["MEETINGTASKS_FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_every_mounted_and_copied_file_exists() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = str(volume).partition(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        if svc.get("build"):
            assert (ROOT / svc["build"] / "Dockerfile").exists()
    mounts = {str(v).split(":")[1] for v in services()["grafana"]["volumes"] if str(v).startswith(".")}
    dashboards_provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/meetingtasks.yml").read_text())
    assert dashboards_provider["providers"][0]["options"]["path"] in mounts
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            assert any((ROOT / s).exists() for s in sources), f"Dockerfile: nothing to copy in {line!r}"
            for source in sources:
                assert "*" in source or (ROOT / source).exists(), f"Dockerfile: {source} does not exist"


def test_the_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = executable(("promtool",), "promtool", PROMETHEUS_INSTALL)
    config = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/alerts.yml", "alerts.yml"))
    checked = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_ha_profile_has_a_replica_and_three_sentinels_whose_config_a_real_sentinel_takes(tmp_path: Path) -> None:
    svcs = services()
    ha = {name for name, svc in svcs.items() if "ha" in svc.get("profiles", [])}
    assert ha == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    replica = svcs["redis-replica"]["command"]
    assert option(replica, "--replicaof") == "redis" and replica[replica.index("--replicaof") + 2] == "6379"
    assert option(replica, "--masterauth") == option(svcs["redis"]["command"], "--masterauth") == "${REDIS_PASSWORD}"
    # the Sentinel URL deploy/env.example gives names exactly these sentinels and the monitored master
    example = (ROOT / "deploy/env.example").read_text()
    url = next(line.split("=", 1)[1] for line in example.splitlines() if "MEETINGTASKS_REDIS_URL=sentinel://" in line)
    target = SentinelUrl.parse(url)
    assert {host for host, _ in target.sentinels} == {"sentinel-1", "sentinel-2", "sentinel-3"}
    script = svcs["sentinel-1"]["command"][2]
    config = script.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0]
    assert f"sentinel monitor {target.master_name} redis 6379 2" in config
    # and the config, pointed at a real password-protected Redis here, is one a real sentinel runs with
    server = RedisServer(tmp_path / "redis", password="compose-check-password").start()
    port = free_port()
    local = (config.replace("redis 6379", f"127.0.0.1 {server.port}").replace("port 26379", f"port {port}")
             .replace("$$REDIS_PASSWORD", "compose-check-password"))
    (tmp_path / "sentinel.conf").write_text(local + f"\ndir {tmp_path}\n")
    sentinel = subprocess.Popen([find_redis_server(), str(tmp_path / "sentinel.conf"), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=1)

        def master() -> Any:
            try:
                return client.sentinel_master(target.master_name)
            except redis.RedisError:
                return None

        wait_for(lambda: (master() or {}).get("flags") == "master", 15, message="the sentinel to see the master")
        assert int(master()["port"]) == server.port
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        server.stop()
