"""No setting's error, and no start-up line, prints a Redis URL's password or a secret setting's value."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field, SecretStr

from meetingtasks.cli.up import Redis, show_plan
from meetingtasks.core.app_settings import AppSettings
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.redaction import redact_text, redact_url
from meetingtasks.core.settings import Settings, load_settings

PASSWORD = "s3cret-Value-9"


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@h:6379/0",
    f"rediss://user:{PASSWORD}@h:6379/0",
    f"redis://user:{PASSWORD}@with-at@h:6379/0",  # an unescaped '@' in the password
    f"unix:///run/redis.sock?db=1&password={PASSWORD}",
    f"sentinel://u:{PASSWORD}@h1:26379,h2:x/mymaster/0",
])
def test_redact_url_masks_the_password_of_any_redis_url_also_one_that_does_not_parse(url: str) -> None:
    shown = redact_url(url)
    assert PASSWORD not in shown and "***" in shown, shown
    assert redact_text(f"error: {url!r} is wrong") == f"error: {shown!r} is wrong"


def test_a_url_without_password_and_other_text_are_left_as_they_are() -> None:
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_text("sentinel://[user:password@]host:port/<master>") == "sentinel://[user:password@]host:port/<master>"


def test_a_non_numeric_db_is_refused_at_load_in_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETINGTASKS_REDIS_URL", f"redis://u:{PASSWORD}@127.0.0.1:6379/abc")
    with pytest.raises(ConfigurationError, match=r"REDIS_URL: .*db must be a number, not 'abc'") as refused:
        load_settings()
    assert PASSWORD not in str(refused.value) and "\n" not in str(refused.value)
    monkeypatch.setenv("MEETINGTASKS_REDIS_URL", "unix:///run/redis.sock?db=two")
    with pytest.raises(ConfigurationError, match="not 'two'"):
        load_settings()


@pytest.mark.parametrize("url", ["redis://h:6379", "redis://h:6379/", "redis://h/15", "unix:///run/r.sock?db=3"])
def test_a_numeric_or_absent_db_passes(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


def test_a_secret_setting_that_is_refused_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    class Vault(AppSettings):
        yaml_section: ClassVar[str] = "vault"
        vault_token: SecretStr = Field(..., min_length=40, description="the vault's token")

    monkeypatch.setenv("MEETINGTASKS_VAULT_TOKEN", PASSWORD)
    with pytest.raises(ConfigurationError, match="MEETINGTASKS_VAULT_TOKEN") as refused:
        Vault.load()
    assert PASSWORD not in str(refused.value), refused.value


def test_an_app_setting_that_is_a_url_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    class Cache(AppSettings):
        yaml_section: ClassVar[str] = "cache"
        cache_retries: int = Field(1, description="retries")

    monkeypatch.setenv("MEETINGTASKS_CACHE_RETRIES", f"redis://u:{PASSWORD}@h/0")
    with pytest.raises(ConfigurationError, match="MEETINGTASKS_CACHE_RETRIES") as refused:
        Cache.load()
    assert PASSWORD not in str(refused.value) and "redis://u:***@h/0" in str(refused.value), refused.value


def test_up_shows_a_configured_redis_url_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(redis_url=f"redis://admin:{PASSWORD}@127.0.0.1:6379/0")
    show_plan(settings, Redis(settings), [], "")
    out = capsys.readouterr().out
    assert "redis://admin:***@127.0.0.1:6379/0" in out and PASSWORD not in out, out
