"""Settings from env and the meeting system's config.yaml; wrong values are one clear line."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.secret_fields import GENERATE_HINT as FERNET_HINT
from meetingtasks.core.settings import load_settings
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import new_client

CONFIG_YAML = """
message_queue:
  enabled: true
  type: redis
  queue_name: meeting_tasks
  workers: 4
  visibility_timeout: 30
  poll_interval: 0.5
  max_retries: 5
  enable_dead_letter_queue: true
task_scheduler:
  enabled: true
  check_interval: 0.25
event_bus:
  enabled: true
  buffer_size: 2048
task_dispatcher:
  enabled: true
  default_priority: high
  status_ttl: 3600
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.delenv(key)


def test_yaml_sections_of_the_meeting_system_map_onto_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_YAML)
    monkeypatch.setenv("MEETINGTASKS_CONFIG", str(path))
    s = load_settings()
    assert (s.worker_concurrency, s.visibility_timeout_s, s.max_retries) == (4, 30.0, 5)
    assert (s.pump_interval_s, s.local_bus_buffer, s.status_ttl_s) == (0.25, 2048, 3600)
    assert s.default_priority == "high"


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_YAML)
    monkeypatch.setenv("MEETINGTASKS_CONFIG", str(path))
    monkeypatch.setenv("MEETINGTASKS_MAX_RETRIES", "9")
    assert load_settings().max_retries == 9


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("MEETINGTASKS_VISIBILITY_TIMEOUT_S", "-5",
         "MEETINGTASKS_VISIBILITY_TIMEOUT_S: Input should be greater than 0"),
        ("MEETINGTASKS_REDIS_URL", "http://example", "MEETINGTASKS_REDIS_URL: Value error, 'http://example' is not a"),
        ("MEETINGTASKS_MAX_RETRIES", "many", "MEETINGTASKS_MAX_RETRIES: Input should be a valid integer"),
        ("MEETINGTASKS_DEFAULT_PRIORITY", "urgent", "MEETINGTASKS_DEFAULT_PRIORITY: Input should be"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_key(monkeypatch: pytest.MonkeyPatch, env: str, value: str,
                                                  expected: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_a_wrong_yaml_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("message_queue:\n  visibility_timeout: -1\n")
    monkeypatch.setenv("MEETINGTASKS_CONFIG", str(path))
    with pytest.raises(ConfigurationError, match="VISIBILITY_TIMEOUT_S: Input should be greater than 0"):
        load_settings()


def test_broken_yaml_and_missing_file_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETINGTASKS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigurationError, match="cannot read the file"):
        load_settings()
    bad = tmp_path / "bad.yaml"
    bad.write_text("message_queue: [unclosed")
    monkeypatch.setenv("MEETINGTASKS_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_settings()


def test_cli_reports_a_bad_setting_in_one_line_and_exits_1(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")}
    env["MEETINGTASKS_VISIBILITY_TIMEOUT_S"] = "0"
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "stats"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "MEETINGTASKS_VISIBILITY_TIMEOUT_S" in out.stderr


def test_password_and_acl_user_in_the_url_work(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth", password="s3cret").start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "meeting", "on", ">pw2", "~*", "&*", "+@all")
        settings = load_settings(redis_url=f"redis://meeting:pw2@127.0.0.1:{server.port}/0")
        client = new_client(settings.broker_url(), settings)
        assert client.ping()
        assert client.acl_whoami() == "meeting"
        wrong = new_client(f"redis://meeting:wrong@127.0.0.1:{server.port}/0", settings)
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
    finally:
        server.stop()


def test_tls_urls_verify_certificates_by_default() -> None:
    settings = load_settings(redis_url="rediss://:pw@example.internal:6380/0")
    import ssl

    from meetingtasks.store.connections import ssl_options

    assert ssl_options(settings)["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    from meetingtasks.worker.app import create_app

    app = create_app("user", settings)
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED


# --- placeholder secrets ---------------------------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "env.example"

#: deploy/env.example's variables -> the meetingtasks settings docker-compose.yml builds from them (None: not
#: ours: Grafana's own admin password, checked here only against the placeholder rule).
SETTINGS_FROM_EXAMPLE = {
    "REDIS_PASSWORD": lambda v: {"MEETINGTASKS_REDIS_URL": f"redis://:{v}@redis:6379/0",
                                 "MEETINGTASKS_SERVICE_REDIS_URLS": f'{{"ai": "redis://:{v}@redis-ai:6379/0"}}'},
    "MEETINGTASKS_GATEWAY_SECRET": lambda v: {"MEETINGTASKS_GATEWAY_SECRET": v},
    "FLOWER_BASIC_AUTH": lambda v: {"MEETINGTASKS_FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(16)},{v}"},
    "CONSOLE_BASIC_AUTH": lambda v: {"MEETINGTASKS_CONSOLE_BASIC_AUTH": v},
    "GRAFANA_ADMIN_PASSWORD": None,
    "MEETINGTASKS_ENCRYPTION_KEYS": lambda v: {"MEETINGTASKS_ENCRYPTION_KEYS": v},
}


def example_values() -> dict[str, str]:
    lines = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))  # type: ignore[misc]


def test_every_placeholder_of_env_example_is_refused_at_start_up_with_how_to_generate_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meetingtasks.core.settings import GENERATE_SECRET_HINT, is_placeholder

    example = example_values()
    assert set(example) == set(SETTINGS_FROM_EXAMPLE), "a new variable in deploy/env.example: map it here"
    for variable, value in example.items():
        user_password = variable in ("FLOWER_BASIC_AUTH", "CONSOLE_BASIC_AUTH")
        assert is_placeholder(value.partition(":")[2] if user_password else value), variable
        settings_env = SETTINGS_FROM_EXAMPLE[variable]
        if settings_env is None:
            continue
        for key, setting in settings_env(value).items():
            with monkeypatch.context() as m:
                m.setenv(key, setting)
                with pytest.raises(ConfigurationError) as info:
                    load_settings()
            message = str(info.value)
            assert message.startswith(key.partition("[")[0]) or message.startswith(key), message
            hint = FERNET_HINT if key == "MEETINGTASKS_ENCRYPTION_KEYS" else GENERATE_SECRET_HINT
            assert message.endswith(hint) and "\n" not in message, message
            assert value.rpartition(":")[2] not in message, "the refusal never echoes the secret"


def test_real_secrets_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    real = {variable: secrets.token_urlsafe(32) for variable in example_values()}
    real["FLOWER_BASIC_AUTH"] = f"admin:{real['FLOWER_BASIC_AUTH']}"
    real["CONSOLE_BASIC_AUTH"] = f"admin:{real['CONSOLE_BASIC_AUTH']}"
    real["MEETINGTASKS_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    for variable, value in real.items():
        settings_env = SETTINGS_FROM_EXAMPLE[variable]
        for key, setting in (settings_env(value) if settings_env else {}).items():
            monkeypatch.setenv(key, setting)
    settings = load_settings()
    assert settings.gateway_secret is not None and settings.flower_basic_auth is not None
    assert settings.encryption_keys is not None


def test_a_placeholder_gateway_secret_stops_the_gateway_in_one_line(tmp_path: Path) -> None:
    import os

    from meetingtasks.core.settings import GENERATE_SECRET_HINT

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")}
    env.update(MEETINGTASKS_GATEWAY_SECRET=example_values()["MEETINGTASKS_GATEWAY_SECRET"],
               MEETINGTASKS_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "gateway", "--port", "0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == ("error: MEETINGTASKS_GATEWAY_SECRET is a placeholder, not a secret: "
                          f"{GENERATE_SECRET_HINT}\n")
    # and one written into the data directory is refused the same way
    (tmp_path / "gateway.secret").write_text("change-me-a-long-random-gateway-secret\n")
    del env["MEETINGTASKS_GATEWAY_SECRET"]
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "token", "ann"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr.count("\n")) == (1, 1) and GENERATE_SECRET_HINT in out.stderr
