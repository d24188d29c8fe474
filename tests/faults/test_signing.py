"""Message signing (Celery's ``auth`` serializer): with a key, a certificate and a store of trusted
certificates configured, workers run only task messages signed by a trusted certificate; everything else is
dead-lettered with the reason, and the worker keeps consuming."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery import Celery

import tests.support.tasks  # noqa: F401 - registers t_echo for the tests without a platform fixture
from meetingtasks import dispatch
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.message import encode_task_message, loads, new_id
from meetingtasks.core.settings import Settings
from meetingtasks.core.signing import (
    MessageSigner,
    install_verifier,
    signer_for,
    signer_of,
    unverified_body,
)
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.deadletter import DeadLetter
from meetingtasks.store.platform import Platform
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, worker_env

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow

SIGNING_OFF = {"MEETINGTASKS_SIGNING_KEY": "", "MEETINGTASKS_SIGNING_CERT": "", "MEETINGTASKS_SIGNING_CERT_STORE": ""}


@dataclass(frozen=True)
class Identity:
    """A private key, its self-signed certificate, and a store directory trusting only that certificate."""

    key: Path
    cert: Path
    store: Path

    def env(self) -> dict[str, str]:
        return {"MEETINGTASKS_SIGNING_KEY": str(self.key), "MEETINGTASKS_SIGNING_CERT": str(self.cert),
                "MEETINGTASKS_SIGNING_CERT_STORE": str(self.store)}

    def settings(self, **overrides: object) -> Settings:
        return Settings(**{"signing_key": self.key, "signing_cert": self.cert, "signing_cert_store": self.store,
                           **overrides})

    def signer(self) -> MessageSigner:
        signer = signer_for(self.settings())
        assert signer is not None
        return signer


def make_identity(directory: Path, name: str) -> Identity:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert, store = directory / f"{name}.key", directory / f"{name}.pem", directory / f"{name}-trusted"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN=meetingtasks {name}"], check=True, capture_output=True)
    store.mkdir()
    (store / cert.name).write_bytes(cert.read_bytes())
    return Identity(key, cert, store)


@pytest.fixture(scope="session")
def platform_identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return make_identity(tmp_path_factory.mktemp("signing"), "platform")


@pytest.fixture(scope="session")
def intruder_identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A well-formed key and certificate that no worker trusts."""
    return make_identity(tmp_path_factory.mktemp("intruder"), "intruder")


@pytest.fixture
def env(redis_url: str, platform_identity: Identity) -> dict[str, str]:
    """Signing on for this module: for the workers and (through ``settings``) for this test process."""
    return worker_env(redis_url, **platform_identity.env())


@pytest.fixture
def worker(platform: Platform, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("ai")


def only_dead_letter(platform: Platform, r: redis.Redis) -> DeadLetter:
    (letter,) = wait_for(lambda: platform.dead_letters.list(r, "ai"), message="a dead letter")  # type: ignore[misc]
    return letter  # type: ignore[no-any-return]


def assert_worker_still_consumes(worker: WorkerProcess) -> None:
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}
    assert worker.proc.poll() is None


# --- the platform signs, the workers run it -------------------------------------------------------------------
def test_a_dispatched_task_is_signed_and_a_prefork_worker_runs_it(
    platform: Platform, r: redis.Redis, platform_identity: Identity, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given signing on and no worker yet, when a task is dispatched
    handle = dispatch("t_echo", {"tag": "signed"})
    # then the queued message carries a signed body, not plain JSON
    envelope = loads(r.lindex("ai.normal", 0))  # type: ignore[arg-type]
    assert (envelope["content-type"], envelope["content-encoding"]) == ("application/data", "utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(envelope["body"])
    assert signer_of(envelope["body"]) == platform_identity.signer().signer_id
    assert unverified_body(envelope["body"])[0][0]["tag"] == "signed"
    # and a prefork worker (verifying in its main process and again in the pool child) runs it
    start_worker("ai", "--pool", "prefork", "--concurrency", "1")
    assert handle.wait(timeout=30) == {"tag": "signed"}


def test_a_retried_task_is_signed_again_and_succeeds(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    # given a task that fails twice, then succeeds: its retries are new messages written by the worker
    handle = dispatch("t_flaky", {"tag": "flaky", "fail_times": 2})
    # then each retry is accepted by the signature check and the task succeeds on its third attempt
    assert handle.wait(timeout=30) == "ok"
    assert r.llen("test:attempts") == 3
    assert platform.dead_letters.count(r, "ai") == 0


def test_a_dead_letter_is_kept_signed_so_its_replay_runs(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    # given a task dead-lettered after its retries
    handle = dispatch("t_always_fails", {"tag": "sick"})
    letter = only_dead_letter(platform, r)
    assert letter.reason == "RuntimeError"
    assert loads(letter.message)["content-type"] == "application/data"  # type: ignore[arg-type]
    # when the cause is fixed and the letter replayed
    r.set("test:heal:sick", 1)
    assert platform.dead_letters.replay(r, letter.id).replayed
    # then the worker accepts the replayed message and the task succeeds
    wait_for(lambda: handle.status().value == "SUCCEEDED", 30, message="the replayed task to succeed")


def test_cancel_with_terminate_still_works_because_remote_control_stays_json(
    platform: Platform, r: redis.Redis, env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a prefork worker running a long task, signing on
    start_worker("ai", "--pool", "prefork", "--concurrency", "1")
    handle = dispatch("t_sleep", {"tag": "long", "seconds": 60})
    wait_for(lambda: r.llen("test:started") == 1, 30, message="the task to start")
    # when it is cancelled with --terminate (a revoke through Celery's remote control)
    out = subprocess.run([sys.executable, "-m", "meetingtasks.cli", "cancel", handle.id, "--terminate"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    # then the worker obeys it
    assert out.returncode == 0, out.stderr
    wait_for(lambda: handle.status().value == "CANCELLED", 20, message="the task to be cancelled")
    assert r.llen("test:finished") == 0


# --- what the workers refuse --------------------------------------------------------------------------------
def test_an_unsigned_message_is_dead_lettered_and_the_worker_keeps_consuming(
    platform: Platform, r: redis.Redis, worker: WorkerProcess
) -> None:
    # given someone with access to Redis but without the key pushes a well-formed, unsigned task message
    task_id = new_id()
    r.lpush("ai.normal", encode_task_message(task_id=task_id, task_name="t_echo", payload={"tag": "unsigned"},
                                             queue="ai.normal"))
    # then it is dead-lettered unrun, saying it is not signed
    letter = only_dead_letter(platform, r)
    assert letter.reason == "InvalidTaskMessage"
    assert "not signed: content type application/json is not accepted; message signing is on" in letter.error
    assert letter.task_id == task_id and letter.payload == {"tag": "unsigned"}  # pushed as is
    assert platform.status.get(r, task_id).status.value == "DEAD_LETTERED"  # type: ignore[union-attr]
    assert r.llen("test:runs") == 0
    assert_worker_still_consumes(worker)


def test_a_signed_message_whose_body_was_altered_is_dead_lettered(
    platform: Platform, r: redis.Redis, platform_identity: Identity, worker: WorkerProcess
) -> None:
    # given a message signed by the platform whose payload is changed on its way (signature kept)
    signed = loads(encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "honest"},
                                       queue="ai.normal", signer=platform_identity.signer()))
    packed = base64.b64decode(signed["body"])
    assert packed.count(b'"honest"') == 1
    signed["body"] = base64.b64encode(packed.replace(b'"honest"', b'"forged"')).decode()
    r.lpush("ai.normal", json.dumps(signed))
    # then the signature check fails and the message is dead-lettered unrun
    letter = only_dead_letter(platform, r)
    assert letter.reason == "DecodeError"
    assert "bad signature: the body does not match its signature by meetingtasks platform" in letter.error
    assert letter.payload == {"tag": "forged"}  # shown unverified, for the operator to see what came in
    assert r.llen("test:runs") == 0
    assert_worker_still_consumes(worker)


@pytest.mark.parametrize("header", ["task", "id"])
def test_a_signed_body_under_rewritten_headers_is_dead_lettered(
    platform: Platform, r: redis.Redis, platform_identity: Identity, worker: WorkerProcess, header: str
) -> None:
    # given a genuine signed t_echo message whose (unsigned) headers are rewritten: another task type that
    # accepts the same payload, or a fresh task id (a replay dodging the finished task's status record)
    signed = loads(encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "moved"},
                                       queue="ai.normal", signer=platform_identity.signer()))
    signed["headers"][header] = "t_record" if header == "task" else new_id()
    r.lpush("ai.normal", json.dumps(signed))
    # then the body's own record of what it was signed for gives it away: dead-lettered, nothing ran
    letter = only_dead_letter(platform, r)
    assert letter.reason == "InvalidTaskMessage"
    assert "the signed body was made for 't_echo " in letter.error and "(headers rewritten)" in letter.error
    assert r.llen("test:runs") == 0 and r.llen("test:done") == 0
    assert_worker_still_consumes(worker)


def test_a_message_signed_by_an_untrusted_certificate_is_dead_lettered(
    platform: Platform, r: redis.Redis, intruder_identity: Identity, worker: WorkerProcess
) -> None:
    # given a message properly signed, but with a key whose certificate is not in the workers' store
    r.lpush("ai.normal", encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "intruder"},
                                             queue="ai.normal", signer=intruder_identity.signer()))
    # then it is dead-lettered unrun, naming the unknown certificate
    letter = only_dead_letter(platform, r)
    assert letter.reason == "DecodeError"
    assert "signed by an untrusted certificate (meetingtasks intruder " in letter.error
    assert r.llen("test:runs") == 0
    assert_worker_still_consumes(worker)


@pytest.mark.parametrize(
    ("content_type", "reason", "error_part"),
    [("application/text", "InvalidTaskMessage", "not signed: content type application/text is not accepted"),
     (None, "DecodeError", "not a signed body")],
)
def test_a_body_kombu_would_pass_undecoded_is_dead_lettered(
    platform: Platform, r: redis.Redis, worker: WorkerProcess, content_type: str | None, reason: str,
    error_part: str,
) -> None:
    # given a message whose content type kombu trusts without decoding (or none at all, which it reads as
    # application/data): it would skip the signature check, and its raw text used to stop the worker
    envelope = loads(encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "raw"},
                                         queue="ai.normal"))
    envelope["content-type"] = content_type
    r.lpush("ai.normal", json.dumps(envelope))
    # then it is refused like any unsigned message, and the worker goes on
    letter = only_dead_letter(platform, r)
    assert letter.reason == reason
    assert error_part in letter.error
    assert r.llen("test:runs") == 0
    assert_worker_still_consumes(worker)


# --- signing off ----------------------------------------------------------------------------------------------
def test_with_signing_off_messages_stay_plain_json(platform_identity: Identity) -> None:
    # given the default settings (no signing) and the same settings with signing on
    plain = Dispatcher(Platform(platform_identity.settings(signing_key=None, signing_cert=None,
                                                           signing_cert_store=None)))
    signed = Dispatcher(Platform(platform_identity.settings()))
    # then only the signing dispatcher changes the body; headers and properties have the same shape
    plain_msg = loads(plain.prepare("t_echo", {"tag": "x"}).message)
    signed_msg = loads(signed.prepare("t_echo", {"tag": "x"}).message)
    assert plain_msg["content-type"] == "application/json"
    assert json.loads(plain_msg["body"])[0][0]["tag"] == "x"
    assert signed_msg["content-type"] == "application/data"
    assert set(plain_msg["headers"]) == set(signed_msg["headers"])
    assert set(plain_msg["properties"]) == set(signed_msg["properties"])


def test_a_worker_without_signing_dead_letters_a_signed_message(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a worker started without signing (a configuration mistake) and a signed dispatch
    worker = start_worker("ai", env_overrides=SIGNING_OFF)
    handle = dispatch("t_echo", {"tag": "signed"})
    # then the message is dead-lettered (not run, not lost) saying what is probably wrong
    letter = only_dead_letter(platform, r)
    assert (letter.task_id, letter.reason) == (handle.id, "InvalidTaskMessage")
    assert "content type application/data is not accepted (this worker accepts only json); a signed message? " \
           "message signing is off on this worker" in letter.error
    assert r.llen("test:runs") == 0
    # and the worker goes on with the (unsigned) messages it does accept
    r.lpush("ai.normal", encode_task_message(task_id=new_id(), task_name="t_echo", payload={"tag": "plain"},
                                             queue="ai.normal"))
    wait_for(lambda: r.llen("test:runs") == 1, message="the plain message to run")
    assert worker.proc.poll() is None


# --- configuration ----------------------------------------------------------------------------------------------
def test_a_worker_with_signing_configured_in_part_does_not_start(redis_url: str, platform_identity: Identity) -> None:
    env = worker_env(redis_url, **{**platform_identity.env(), "MEETINGTASKS_SIGNING_CERT_STORE": ""})
    out = subprocess.run([sys.executable, "-m", "meetingtasks.cli", "worker", "ai"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: message signing is configured in part: missing MEETINGTASKS_SIGNING_CERT_STORE (set "
        "MEETINGTASKS_SIGNING_KEY, MEETINGTASKS_SIGNING_CERT, MEETINGTASKS_SIGNING_CERT_STORE together, or none)"
    ]


def test_configuration_errors_are_one_line_naming_the_setting(
    tmp_path: Path, platform_identity: Identity, intruder_identity: Identity
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    empty_store = tmp_path / "empty"
    empty_store.mkdir()
    cases: list[tuple[dict[str, object], str]] = [
        ({"signing_cert": None}, "missing MEETINGTASKS_SIGNING_CERT "),
        ({"signing_key": tmp_path / "absent.key"}, f"MEETINGTASKS_SIGNING_KEY={tmp_path}/absent.key: no such file"),
        ({"signing_cert_store": empty_store}, f"MEETINGTASKS_SIGNING_CERT_STORE={empty_store}: no certificate"),
        ({"signing_cert_store": platform_identity.cert}, "not a readable directory"),
        ({"signing_key": garbage}, f"MEETINGTASKS_SIGNING_KEY={garbage}: not a PEM RSA private key"),
        ({"signing_cert": garbage}, f"MEETINGTASKS_SIGNING_CERT={garbage}: not a PEM RSA certificate"),
        ({"signing_key": intruder_identity.key}, "the certificate does not belong to MEETINGTASKS_SIGNING_KEY"),
    ]
    for overrides, expected in cases:
        with pytest.raises(ConfigurationError) as caught:
            signer_for(platform_identity.settings(**overrides))
        assert expected in str(caught.value), (overrides, str(caught.value))
        assert "\n" not in str(caught.value)


def test_a_password_protected_key_needs_its_password(tmp_path: Path, platform_identity: Identity) -> None:
    # given the platform key stored encrypted
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(platform_identity.key), "-aes256", "-passout", "pass:s3cret",
                    "-out", str(encrypted)], check=True, capture_output=True)
    # then it signs with the right password, and a wrong or missing one is a one-line error
    signer = signer_for(platform_identity.settings(signing_key=encrypted, signing_key_password="s3cret"))
    assert signer is not None and signer.verify(signer.sign([[{"a": 1}], {}, {}])) == [[{"a": 1}], {}, {}]
    for password in ("wrong", None):
        with pytest.raises(ConfigurationError, match=r"or the password .* is wrong"):
            signer_for(platform_identity.settings(signing_key=encrypted, signing_key_password=password))


def test_a_worker_whose_own_certificate_is_not_trusted_is_refused(
    platform_identity: Identity, intruder_identity: Identity
) -> None:
    # given a worker configuration that would sign its retries with a certificate its store does not trust
    signer = signer_for(platform_identity.settings(signing_cert_store=intruder_identity.store))
    assert signer is not None
    with pytest.raises(ConfigurationError, match="is not in MEETINGTASKS_SIGNING_CERT_STORE"):
        install_verifier(Celery("probe", set_as_current=False), signer)
