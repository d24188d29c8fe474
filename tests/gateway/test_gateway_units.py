"""Tokens, the frame parser, the per-client token bucket and the two CLI commands, without a gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meetingtasks.errors import ConfigurationError
from meetingtasks.gateway import protocol
from meetingtasks.gateway.limits import TokenBucket
from meetingtasks.gateway.tokens import TokenError, mint_token, require_secret, verify_token
from meetingtasks.settings import Settings
from tests.conftest import ROOT

SECRET = "unit-test-secret-0123456789abcdef"


def test_a_token_names_its_client_until_it_expires() -> None:
    token = mint_token(SECRET, "room-7:ann", 60, now_s=1000)
    assert verify_token(SECRET, token, now_s=1030) == "room-7:ann"
    with pytest.raises(TokenError, match="token expired 35s ago"):
        verify_token(SECRET, token, now_s=1095)


@pytest.mark.parametrize(("token", "reason"), [
    (None, "no token"),
    ("", "no token"),
    ("abc", "malformed token"),
    ("a.b.c", "malformed token"),
])
def test_malformed_tokens_are_refused(token: str | None, reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        verify_token(SECRET, token)


def test_tampered_or_foreign_tokens_are_refused() -> None:
    token = mint_token(SECRET, "ann", 60)
    header, claims, signature = token.split(".")
    forged_claims = mint_token(SECRET, "bob", 60).split(".")[1]
    with pytest.raises(TokenError, match="bad token signature"):
        verify_token(SECRET, f"{header}.{forged_claims}.{signature}")
    with pytest.raises(TokenError, match="bad token signature"):
        verify_token("another-secret-0123456789abcdef", token)
    none_header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    with pytest.raises(TokenError, match="algorithm must be HS256"):
        verify_token(SECRET, f"{none_header}.{claims}.")


def test_client_ids_are_checked_when_minting() -> None:
    with pytest.raises(ValueError, match="client id 'a b'"):
        mint_token(SECRET, "a b", 60)


def test_a_missing_or_short_secret_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no gateway secret: set MEETINGTASKS_GATEWAY_SECRET"):
        require_secret(Settings(data_dir=tmp_path, gateway_secret=None))
    with pytest.raises(ConfigurationError, match="too short"):
        require_secret(Settings(data_dir=tmp_path, gateway_secret="short"))
    (tmp_path / "gateway.secret").write_text("recorded-secret-0123456789\n")
    assert require_secret(Settings(data_dir=tmp_path, gateway_secret=None)) == "recorded-secret-0123456789"


def test_frames_parse_into_requests() -> None:
    assert protocol.parse_frame('{"op":"submit","ref":"a","type":"t","payload":{"x":1},"priority":"high"}') == \
        protocol.Submit("a", "t", {"x": 1}, "high")
    assert protocol.parse_frame('{"op":"cancel","id":"i"}') == protocol.Cancel(None, "i")
    assert protocol.parse_frame('{"op":"subscribe","id":"i","ref":3}') == protocol.Subscribe(3, "i")
    with pytest.raises(protocol.ProtocolError, match="ref must be a string or a number"):
        protocol.parse_frame('{"op":"cancel","id":"i","ref":{}}')


def test_status_frames_carry_only_what_the_protocol_names() -> None:
    event = {"op": "status", "id": "i", "status": "SUCCEEDED", "time": 1.5, "attempt": 1, "type": "t",
             "service": "ai", "run_s": 0.1, "result": {"ok": True}}
    assert protocol.status(event) == b'{"op":"status","id":"i","status":"SUCCEEDED","time":1.5,"result":{"ok":true}}'


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate_per_s=2, burst=3, now_s=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.4) is False
    assert bucket.allow(0.5) is True  # one token after half a second at 2/s
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False], "never more than the burst"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_token_command_mints_a_verifiable_token(env: dict[str, str]) -> None:
    out = run_cli("token", "ann", "--ttl", "120", env={**env, "MEETINGTASKS_GATEWAY_SECRET": SECRET})
    assert out.returncode == 0, out.stderr
    assert verify_token(SECRET, out.stdout.strip()) == "ann"
    bad = run_cli("token", "not valid", env={**env, "MEETINGTASKS_GATEWAY_SECRET": SECRET})
    assert (bad.returncode, bad.stderr.startswith("error: client id 'not valid'")) == (2, True)


def test_commands_refuse_to_run_without_a_secret_and_say_how_to_set_one(env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    no_secret = {**env, "MEETINGTASKS_DATA_DIR": str(tmp_path)}
    for args in (("token", "ann"), ("gateway", "--port", "0")):
        out = run_cli(*args, env=no_secret)
        assert out.returncode == 1
        assert out.stderr.startswith("error: no gateway secret: set MEETINGTASKS_GATEWAY_SECRET")
        assert "--generate-secret" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_generate_secret_records_one_readable_by_the_owner_only(tmp_path: Path) -> None:
    from meetingtasks.cli.gateway import make_secret

    settings = Settings(data_dir=tmp_path / "data", gateway_secret=None)
    secret = make_secret(settings)
    path = tmp_path / "data" / "gateway.secret"
    assert (path.stat().st_mode & 0o777, len(secret) >= 32) == (0o600, True)
    assert make_secret(settings) == secret == require_secret(settings), "kept, and found by every command"
