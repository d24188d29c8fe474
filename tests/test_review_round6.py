"""Hostile review of this round's additions: each test is a promise the docs make that the
code broke when it was written. Real redis-server, real processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.settings import load_settings
from meetingtasks.operations.embedded import free_port
from tests.support.processes import ROOT

PASSWORD = "hunter2-not-for-logs"

#: URLs that a settings check refuses, each carrying a password: the one-line error must not print it.
BAD_URLS_WITH_PASSWORD = [
    f"sentinel://u:{PASSWORD}@h:notaport/mymaster/0",
    f"sentinel://u:{PASSWORD}@h:26379/mymaster/x",
    f"sentinels://u:{PASSWORD}@h:26379",
    f"redis://u:{PASSWORD}@h:badport/0",
]


@pytest.mark.parametrize("setting", ["MEETINGTASKS_REDIS_URL", "MEETINGTASKS_SERVICE_REDIS_URLS"])
@pytest.mark.parametrize("url", BAD_URLS_WITH_PASSWORD)
def test_a_refused_redis_url_never_prints_its_password(url: str, setting: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Redis URL with a password that the settings refuse (sentinel.py: "never echoing the password")
    monkeypatch.setenv(setting, url if setting.endswith("_URL") else json.dumps({"ai": url}))
    # When the settings load
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    # Then the one line names the setting and masks the password (it goes to terminals, CI logs, journald)
    message = str(refused.value)
    assert setting in message
    assert PASSWORD not in message, message


def test_a_per_service_url_map_that_is_not_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given MEETINGTASKS_SERVICE_REDIS_URLS written as a shell user would guess it (not a JSON object)
    monkeypatch.setenv("MEETINGTASKS_SERVICE_REDIS_URLS", "ai=redis://127.0.0.1:6380/0")
    # When the settings load, Then it is the one-line ConfigurationError naming the setting (every CLI command
    # turns it into "error: ..." and exit 1), not pydantic-settings' SettingsError with a traceback
    with pytest.raises(ConfigurationError, match="MEETINGTASKS_SERVICE_REDIS_URLS"):
        load_settings()


def test_the_cli_error_of_a_refused_sentinel_url_masks_its_password(tmp_path: object) -> None:
    # Given a deployment whose Sentinel URL has a typo in a port
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETINGTASKS_DATA_DIR": str(tmp_path),
           "MEETINGTASKS_REDIS_URL": f"sentinel://admin:{PASSWORD}@s1:26379,s2:2637x/mymaster/0"}
    # When any command starts
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "stats"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    # Then it exits 1 with one line that does not print the password
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert PASSWORD not in out.stderr + out.stdout, out.stderr


# --- the platform apart from the meeting system: registrations ---------------------------------------------------
HIJACK = """
from pydantic import BaseModel
from meetingtasks import task_type
from meetingtasks.operations.embedded import free_port
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.registry import REGISTRY

class Invoice(BaseModel):
    invoice_id: str = "i-1"

try:
    @task_type("billing", {name!r}, payload=Invoice)
    def handler(p: Invoice) -> dict:
        return {{}}
except ConfigurationError as exc:
    print("refused:", exc)
else:
    print("routed to:", REGISTRY.get({name!r}).service)
"""


def run_python(code: str, tmp_path: object) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter: a registration made by an application's module at its import, before
    anything has read the registry (how `--include MODULE` loads it)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETINGTASKS_DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_an_application_cannot_take_over_a_built_in_task_type_by_registering_its_name(tmp_path: object) -> None:
    # Given an application module that (by mistake) registers a task type under a built-in's name
    # When it is imported first, as `--include` does in a producer or a worker of its service
    out = run_python(HIJACK.format(name="meeting_create"), tmp_path)
    # Then the registration is refused in one line (registered twice), rather than silently routing every
    # meeting_create of this process to the billing service's handler while other processes route it to meeting
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "meeting_create" in out.stdout, out.stdout


@pytest.mark.parametrize("name", ["", "invoice send", "invoice\n", "a:b"])
def test_a_task_type_name_that_is_no_name_is_refused_at_registration(name: str, tmp_path: object) -> None:
    # Given a task type named with nothing, whitespace, a newline or a ':' (it becomes part of Redis keys such as
    # `P profiles:<type>` and `P rate:<type>`, of Celery's task name and of every log line)
    out = run_python(HIJACK.format(name=name), tmp_path)
    # Then it is refused like a bad service or channel name: one line at import
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout


def test_a_channel_declared_unlike_the_built_in_one_is_refused_at_the_call_not_at_every_later_use(
        tmp_path: object) -> None:
    # Given an application that declares the meeting system's channel with other event types and owner
    code = """
from meetingtasks import channel
from meetingtasks.operations.embedded import free_port
from meetingtasks.core.errors import ConfigurationError
try:
    channel("meeting_events", ["meeting.created"], owner="billing")
except ConfigurationError as exc:
    print("refused:", exc)
else:
    print("accepted")
"""
    out = run_python(code, tmp_path)
    # Then channel() raises there (docs/applications.md: "differently is an error"), not later from whatever reads
    # the channel table first (publish_event, the bridge, replay: each then fails with this same error)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "declared twice" in out.stdout, out.stdout


def test_celery_report_of_a_worker_on_a_sentinel_url_masks_the_primarys_password(tmp_path: object) -> None:
    # Given the service apps configured with a Sentinel URL whose primary needs a password
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETINGTASKS_DATA_DIR": str(tmp_path),
           "MEETINGTASKS_REDIS_URL": f"sentinel://worker:{PASSWORD}@127.0.0.1:26379,127.0.0.1:26380/mymaster/0"}
    # When an operator runs Celery's bug-report command (its output is meant to be pasted into an issue)
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "meetingtasks.services.ai", "report"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Then the password is masked everywhere, as Celery masks it in broker_url (it is printed in plain in the
    # transport option mt_sentinel_url, which Celery's censoring does not recognise as secret)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broker_url: 'sentinel://worker:********@" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr, [line for line in out.stdout.splitlines() if PASSWORD in line]


def test_no_sentinel_answering_is_one_clear_line_not_a_client_repr(tmp_path: object) -> None:
    # Given a Sentinel URL whose sentinels are all down (a port nothing listens on)
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETINGTASKS_DATA_DIR": str(tmp_path),
           "MEETINGTASKS_REDIS_URL": f"sentinel://127.0.0.1:{port}/mymaster/0"}
    # When a command needs Redis
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "stats"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    # Then it says so in one clear line (which sentinels, which master), not with redis-py's repr of its client,
    # pool and connection (about 1,500 characters of internals: "<redis.client.Redis(<redis.connection...")
    assert out.returncode == 1
    line = out.stderr.strip()
    assert "\n" not in line and "mymaster" in line, line
    assert "<redis." not in line and len(line) < 400, line
