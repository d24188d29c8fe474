"""Tokens, the frame parser, the per-client token bucket and the two CLI commands, without a gateway."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.registry import REGISTRY, load_builtin_types, task_type
from meetingtasks.core.settings import Settings
from meetingtasks.gateway import protocol
from meetingtasks.gateway.limits import TokenBucket
from meetingtasks.gateway.tokens import TokenError, mint_token, require_secret, verify_token
from tests.support.processes import ROOT

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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: object, claims: object, secret: str = SECRET) -> str:
    """A token whose signature is right whatever its header and claims hold (so they are read)."""
    signing_input = _b64(orjson.dumps(header)) + "." + _b64(orjson.dumps(claims))
    signature = _b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature}"


def _verified_or_refused(token: str) -> str | None:
    try:
        return verify_token(SECRET, token)
    except TokenError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line, always
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300) | st.lists(st.text(max_size=60), min_size=3, max_size=3).map(".".join)
       | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_garbage_tokens_of_any_shape_are_refused_with_a_token_error(token: str) -> None:
    assert _verified_or_refused(token) is None


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(part=st.integers(0, 2), garbage=st.text(max_size=80), keep=st.booleans())
def test_a_valid_token_with_any_part_replaced_or_extended_is_refused(part: int, garbage: str, keep: bool) -> None:
    parts = mint_token(SECRET, "ann", 60).split(".")
    parts[part] = parts[part] + garbage if keep else garbage
    if not garbage and keep:
        assert _verified_or_refused(".".join(parts)) == "ann"
    else:
        assert _verified_or_refused(".".join(parts)) is None


@pytest.mark.slow
@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=json_values | st.fixed_dictionaries({"alg": st.just("HS256")}, optional={"typ": json_values}),
       claims=json_values | st.fixed_dictionaries({}, optional={"sub": json_values, "exp": json_values}))
def test_well_signed_garbage_claims_are_refused_or_name_a_valid_client(header: object, claims: object) -> None:
    client_id = _verified_or_refused(_signed(header, claims))
    if client_id is not None:  # only a real HS256 token with a valid client id and a future expiry gets in
        assert isinstance(claims, dict) and claims["sub"] == client_id and claims["exp"] > 0


def test_a_signature_with_non_ascii_characters_is_refused() -> None:
    header, claims, _ = mint_token(SECRET, "ann", 60).split(".")
    with pytest.raises(TokenError, match="malformed token"):
        verify_token(SECRET, f"{header}.{claims}.\u00e9t\u00e9")
    with pytest.raises(TokenError, match="malformed token"):
        verify_token(SECRET, "x" * 5000)
    with pytest.raises(TokenError, match="malformed token"):
        verify_token(SECRET, _signed({"alg": "HS256"}, {"sub": "ann\n", "exp": 2**40}))


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


# --- which task types gateway clients may submit ---------------------------------------------------------------
#: The built-in client-facing types and the field that names the acting user (docs/security.md).
BUILTIN_CLIENT_TYPES = {
    "user_register": None, "user_login": None,
    "user_profile_update": "user_id", "user_status_change": "user_id",
    "meeting_create": "host_id", "meeting_end": "ended_by",
    "meeting_user_join": "user_id", "meeting_user_leave": "user_id",
    "signaling_webrtc_offer": "from_user", "signaling_webrtc_answer": "from_user",
    "signaling_ice_candidate": "from_user", "signaling_connection_manage": "user_id",
    "speech_recognition": None, "emotion_detection": None, "audio_denoising": None,
}


def test_the_builtin_client_types_are_exactly_the_documented_set() -> None:
    load_builtin_types()
    import meetingtasks.worker.maintenance  # noqa: F401 - registers the maintenance types

    builtin = [s for s in REGISTRY.all() if s.handler.__module__.startswith("meetingtasks.")]
    assert {s.name: s.subject_field for s in builtin if s.client} == BUILTIN_CLIENT_TYPES
    internal = {s.name for s in builtin if not s.client}
    assert {"maintenance_trim_streams", "user_sessions_expire", "meeting_ai_result", "meeting_notify",
            "media_recording_start", "video_enhancement"} <= internal


class _Owned(BaseModel):
    owner: str


def test_a_subject_field_must_be_a_payload_field_of_a_client_type() -> None:
    with pytest.raises(ConfigurationError, match="subject_field='user_id' is not a field of _Owned"):
        task_type("ai", "t_unit_bad_field", payload=_Owned, client=True, subject_field="user_id")(lambda p: p)
    with pytest.raises(ConfigurationError, match="subject_field='owner' needs client=True"):
        task_type("ai", "t_unit_not_client", payload=_Owned, subject_field="owner")(lambda p: p)
    assert REGISTRY.find("t_unit_bad_field") is None and REGISTRY.find("t_unit_not_client") is None


def test_client_access_binds_the_subject_and_denies_everything_else() -> None:
    import tests.support.tasks  # noqa: F401 - registers t_owned, t_echo (client) and t_record (not)
    from meetingtasks.gateway.access import AccessDenied, ClientAccess

    access = ClientAccess()
    assert access.check("t_owned", {"tag": "x"}, "ann") == {"tag": "x", "user_id": "ann"}
    assert access.check("t_owned", {"user_id": None}, "ann") == {"user_id": "ann"}
    assert access.check("t_owned", {"user_id": "ann"}, "ann") == {"user_id": "ann"}
    assert access.check("t_echo", {"user_id": "bob"}, "ann") == {"user_id": "bob"}, "no subject field: untouched"
    for payload in ({"user_id": "bob"}, {"user_id": ""}, {"user_id": ["ann"]}, {"user_id": 7}):
        with pytest.raises(AccessDenied, match="payload field user_id names"):
            access.check("t_owned", payload, "ann")
    for name in ("t_record", "user_sessions_expire", "nope"):
        with pytest.raises(AccessDenied, match=f"task type '{name}' is not open to gateway clients"):
            access.check(name, {}, "ann")
    narrowed = ClientAccess(["t_echo", "t_record"])
    assert [s.name for s in narrowed.types()] == ["t_echo"]
    with pytest.raises(AccessDenied):
        narrowed.check("t_owned", {}, "ann")
