"""Secret fields: a password or a session token never travels or rests in plain text, and shows as ``***``.

The acceptance test watches every command Redis receives (``MONITOR``) while a real user worker registers a
user and logs in through each dispatch path; the rest pins down rotation, undecryptable messages, masking in
the tools and in Celery's task events, foreign producers, and the start-up checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
import redis
from cryptography.fernet import Fernet
from pydantic import BaseModel, SecretStr

from meetingtasks.core.errors import ConfigurationError, DispatchError, TaskFailed
from meetingtasks.core.message import encode_task_message
from meetingtasks.core.secret_fields import (
    MASK,
    PREFIX,
    Keyring,
    Secret,
    UndecryptableSecret,
    key_id,
    keyring,
    mask,
    mask_text,
    open_payload,
    parse_keys,
    seal_and_mask_result,
    seal_payload,
    secret_fields,
)
from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.gateway import protocol
from meetingtasks.operations.flower import create_flower_app
from meetingtasks.services.user.store import UserStore
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status, encode_transition
from meetingtasks.worker.quarantine import quarantine_envelope
from tests.polyglot.test_foreign_producers import send_with_celery_node
from tests.support import secret_tasks
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.watching import Monitor, TaskEventReceiver
from tests.support.workers import TEST_ENCRYPTION_KEY, WorkerProcess

PASSWORD = "Hunter2-Very-Secret-Pw"
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def with_keys(platform: Platform, keys: str) -> Platform:
    """The same platform with other encryption keys."""
    return Platform(platform.settings.model_copy(update={"encryption_keys": SecretStr(keys)}))


def register(d: Dispatcher, name: str, password: str = PASSWORD) -> TaskHandle:
    return d.dispatch("user_register", {"username": name, "email": f"{name}@example.org", "password": password})


@pytest.fixture
def events(platform: Platform, r: redis.Redis) -> Iterator[list[dict[str, Any]]]:
    """Celery's task events as Flower receives them (a real event receiver on the broker)."""
    with TaskEventReceiver(platform, r) as captured:
        yield captured


# --- the acceptance test ----------------------------------------------------------------------------------------
POOLS = [("--pool", "threads", "--concurrency", "2"), ("--pool", "prefork", "--concurrency", "1"), ("--pool", "solo")]


@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS, ids=lambda args: args[1])
def test_monitor_never_sees_the_password_or_the_session_token(
    platform: Platform, redis_url: str, start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...],
) -> None:
    # Given a real user worker, and every command Redis receives watched with MONITOR
    start_worker("user", *pool)
    d = Dispatcher(platform)
    with Monitor(redis_url) as monitor:
        # When a user registers (single dispatch) and logs in through every dispatch path: a batch (the
        # pre-encoded template), a delayed dispatch with a dedup key, and the gateway's submit path
        register(d, "secret_ann").wait(timeout=30)
        login = {"username": "secret_ann", "password": PASSWORD}
        tokens = [
            d.dispatch_batch([("user_login", login)]).handles[0].wait(timeout=30)["token"],
            d.dispatch("user_login", login, delay=0.2, dedup_key="login-once").wait(timeout=30)["token"],
        ]
        [submitted] = d.dispatch_each([{"task_type": "user_login", "payload": login}])
        assert isinstance(submitted, TaskHandle)
        tokens.append(submitted.wait(timeout=30)["token"])

    # Then the watch saw the traffic (the user's name, sealed values) ...
    assert monitor.containing("secret_ann") and monitor.containing(PREFIX)
    # ... but neither the password nor any of the session tokens, in any command
    assert monitor.containing(PASSWORD) == []
    for token in tokens:
        assert token and token != MASK
        assert monitor.containing(token) == []
    # and the caller got the real tokens: each opens a login session
    store = UserStore(platform)
    assert all(store.login(token, now=time.time()) is not None for token in tokens)


# --- masking: Celery task events (Flower), status, dlq ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("pool", POOLS, ids=lambda args: args[1])
def test_celery_task_events_and_the_status_command_show_secrets_as_stars(
    platform: Platform, env: dict[str, str], events: list[dict[str, Any]],
    start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...],
) -> None:
    # Given a user worker sending task events, and a receiver of them (what Flower sees)
    worker = start_worker("user", *pool)
    d = Dispatcher(platform)
    register(d, "evy").wait(timeout=30)

    # When the user logs in
    handle = d.dispatch("user_login", {"username": "evy", "password": PASSWORD})
    token = handle.wait(timeout=30)["token"]

    # Then the task-received event shows the password as *** and task-succeeded shows the token as ***
    def of(kind: str) -> dict[str, Any] | None:
        return next((e for e in events if e.get("type") == kind and e.get("uuid") == handle.id), None)

    received = wait_for(lambda: of("task-received"), 20, message="task-received")
    succeeded = wait_for(lambda: of("task-succeeded"), 20, message="task-succeeded")
    assert MASK in received["args"] and "evy" in received["args"]  # type: ignore[index]
    assert MASK in succeeded["result"] and "evy" in succeeded["result"]  # type: ignore[index]
    text = json.dumps(events)
    assert PASSWORD not in text and token not in text and PREFIX not in text
    # and the worker's log (Celery's received/succeeded lines) shows them as *** too
    log = worker.log()
    assert f"Task user_login[{handle.id}] succeeded" in log and MASK in log
    assert PASSWORD not in log and token not in log

    # and `meetingtasks status` (both forms) shows the result's token as ***
    for args in (("status", handle.id), ("status", handle.id, "--json")):
        shown = cli(env, *args)
        assert shown.returncode == 0, shown.stderr
        assert MASK in shown.stdout and token not in shown.stdout and PREFIX not in shown.stdout, shown.stdout


def test_the_status_channel_shows_the_token_as_stars_and_the_gateway_opens_it_for_its_client(
    platform: Platform,
) -> None:
    # Given a login result sealed as the worker stores it
    ring = keyring(platform.settings)
    assert ring is not None
    sealed = {"user_id": "u1", "token": ring.seal("tok-123")}

    # When its SUCCEEDED transition is published
    event_json, _ = encode_transition("t1", Status.SUCCEEDED, 1, {"result": sealed}, time.time())
    event = json.loads(event_json)

    # Then the event's result shows ***, with the sealed form beside it (opaque without a key) ...
    assert event["result"] == {"user_id": "u1", "token": MASK}
    assert "tok-123" not in event_json.decode()
    # ... which the gateway opens for the client following the task, and nobody without the key can
    assert json.loads(protocol.status(event, ring))["result"] == {"user_id": "u1", "token": "tok-123"}
    assert json.loads(protocol.status(event, None))["result"] == {"user_id": "u1", "token": MASK}


# --- rotation and undecryptable messages ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_message_sealed_with_the_old_key_runs_on_a_worker_with_the_new_key_first(
    platform: Platform, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a producer that still has only the old key, and a worker rotated to new-first, old-second
    old = Dispatcher(with_keys(platform, OLD_KEY))
    start_worker("user", env_overrides={"MEETINGTASKS_ENCRYPTION_KEYS": f"{NEW_KEY},{OLD_KEY}"})

    # When the old producer registers and logs in
    register(old, "rot").wait(timeout=30)
    handle = old.dispatch("user_login", {"username": "rot", "password": PASSWORD})

    # Then both ran; the worker sealed the token with the new key, which the old producer cannot open ...
    assert handle.wait(timeout=30)["token"] == MASK
    stored = handle.info().fields["result"]
    assert f"{PREFIX}{key_id(NEW_KEY.encode())}:" in stored
    # ... and a caller with the new keys reads the real token
    rotated = Dispatcher(with_keys(platform, f"{NEW_KEY},{OLD_KEY}"))
    token = TaskHandle(handle.id, rotated).wait(timeout=5)["token"]
    assert UserStore(platform).login(token, now=time.time()) is not None


@pytest.mark.slow
def test_an_undecryptable_message_is_dead_lettered_naming_the_key_id_and_replays_once_the_key_is_back(
    platform: Platform, r: redis.Redis, env: dict[str, str], start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a worker that has only the new key
    worker = start_worker("user", env_overrides={"MEETINGTASKS_ENCRYPTION_KEYS": NEW_KEY})
    pid = worker.proc.pid

    # When one message was sealed with a key it does not have, and another was tampered with
    unknown = register(Dispatcher(with_keys(platform, OLD_KEY)), "lost")
    good = Dispatcher(with_keys(platform, NEW_KEY))
    ring = Keyring([NEW_KEY.encode()])
    forged = ring.seal(PASSWORD)
    forged = forged[:-8] + ("A" if forged[-8] != "A" else "B") + forged[-7:]
    r.lpush("user.normal", encode_task_message(
        task_id="forged-1", task_name="user_register", queue="user.normal",
        payload={"username": "forged", "email": "f@example.org", "password": forged}))
    behind = register(good, "fine")

    # Then each is dead-lettered with a one-line reason naming the key id; the worker lives; the task behind runs
    with pytest.raises(TaskFailed) as failed:
        unknown.wait(timeout=30)
    assert failed.value.status == "DEAD_LETTERED"
    behind.wait(timeout=30)
    letters = {letter.task_id: letter for letter in platform.dead_letters.list(r, "user")}
    lost = letters[unknown.id]
    assert lost.reason == "UndecryptableSecret"
    assert key_id(OLD_KEY.encode()) in lost.error and "\n" not in lost.error
    forged_letter = wait_for(lambda: next((lt for lt in platform.dead_letters.list(r, "user")
                                           if lt.task_id == "forged-1"), None), 30, message="the forged letter")
    assert "tampered" in forged_letter.error and key_id(NEW_KEY.encode()) in forged_letter.error  # type: ignore[union-attr]
    assert worker.proc.pid == pid and worker.proc.poll() is None

    # and `dlq show` masks the sealed password, in the payload and in the kept message
    shown = cli(env, "dlq", "show", lost.id)
    assert shown.returncode == 0, shown.stderr
    assert MASK in shown.stdout and PREFIX not in shown.stdout and PASSWORD not in shown.stdout

    # When the old key is configured again and the letter is replayed, the kept ciphertext runs
    worker.stop()
    start_worker("user", env_overrides={"MEETINGTASKS_ENCRYPTION_KEYS": f"{NEW_KEY},{OLD_KEY}"})
    platform.dead_letters.replay(r, lost.id)
    wait_for(lambda: Dispatcher(platform).record(unknown.id).status == "SUCCEEDED", 30, message="the replay to run")


# --- foreign producers ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_foreign_producer_sending_the_password_in_plain_text_still_works_and_nothing_stores_it_plain(
    platform: Platform, r: redis.Redis, redis_url: str, events: list[dict[str, Any]],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a user worker
    start_worker("user")

    # When celery-node sends user_register with the password in plain text, then a second one that is refused
    task_id = send_with_celery_node(redis_url, "user.normal", "user_register",
                                    {"username": "node_user", "email": "n@example.org", "password": PASSWORD})
    refused_id = send_with_celery_node(redis_url, "user.normal", "user_register",
                                       {"username": "n", "email": "n2@example.org", "password": PASSWORD})

    # Then the first runs, and the user can log in with that password
    wait_for(lambda: r.exists(platform.keys.status(task_id)) and Dispatcher(platform).record(task_id).status
             == "SUCCEEDED", 30, message="the foreign task to succeed")
    token = Dispatcher(platform).dispatch("user_login", {"username": "node_user", "password": PASSWORD}).wait(
        timeout=30)["token"]
    assert token and token != MASK
    # and the refused one is dead-lettered with the password sealed, in its payload and in its kept message
    letter = wait_for(lambda: next((lt for lt in platform.dead_letters.list(r, "user") if lt.task_id == refused_id),
                                   None), 30, message="the refused foreign task's dead letter")
    assert letter.payload["password"].startswith(PREFIX)  # type: ignore[union-attr]
    assert PASSWORD not in json.dumps(letter.__dict__)
    # and no status record, dead letter or task event holds it in plain text
    for key in r.scan_iter(match=f"{platform.settings.key_prefix}*"):
        kind = r.type(key)
        if kind == b"hash":
            assert PASSWORD.encode() not in b"".join(r.hgetall(key).values()), key
        elif kind == b"string":
            assert PASSWORD.encode() not in (r.get(key) or b""), key
    wait_for(lambda: any(e.get("uuid") == task_id for e in events), 20, message="the foreign task's events")
    assert PASSWORD not in json.dumps(events)


# --- start-up and configuration ---------------------------------------------------------------------------------
def test_malformed_or_missing_keys_stop_a_worker_at_start_up_with_one_line(env: dict[str, str], tmp_path: Any) -> None:
    # A malformed key: the worker does not start, and says which key and how to make one
    bad = cli({**env, "MEETINGTASKS_ENCRYPTION_KEYS": f"{TEST_ENCRYPTION_KEY},not-a-key"}, "worker", "user")
    assert bad.returncode != 0
    line = bad.stderr.strip().splitlines()[-1]
    assert "MEETINGTASKS_ENCRYPTION_KEYS: key 2 is not 32 bytes" in line and "Fernet.generate_key()" in line, line

    # No key anywhere and a data directory that cannot hold one: the user worker (whose types have secret fields)
    # refuses to start, naming them
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    none = cli({**env, "MEETINGTASKS_ENCRYPTION_KEYS": "", "MEETINGTASKS_DATA_DIR": str(blocked / "data")},
               "worker", "user")
    assert none.returncode != 0
    line = none.stderr.strip().splitlines()[-1]
    assert "no encryption key" in line and "user_login" in line and "MEETINGTASKS_ENCRYPTION_KEYS" in line, line

    # The settings object refuses the malformed key too
    with pytest.raises(ConfigurationError, match="key 1 is not 32 bytes"):
        Settings(encryption_keys="short")


def test_without_a_key_one_is_created_in_the_data_directory_and_used(platform: Platform, r: redis.Redis,
                                                                       caplog: pytest.LogCaptureFixture,
                                                                       tmp_path: Any) -> None:
    # Given no key configured and none in the (fresh) data directory
    keyless = Platform(platform.settings.model_copy(update={"encryption_keys": None, "data_dir": tmp_path / "data"}))
    path = keyless.settings.data_dir / "encryption.keys"
    assert not path.exists()
    # When a secret is dispatched, then a key is created where `up` puts it (owner-readable only), with a warning
    with caplog.at_level(logging.WARNING, logger="meetingtasks.core.secret_fields"):
        Dispatcher(keyless).dispatch("user_login", {"username": "ann", "password": PASSWORD})
    assert path.stat().st_mode & 0o777 == 0o600
    assert any("created " + str(path) in m for m in caplog.messages), caplog.messages
    # and the password went out sealed with it, never in plain text
    (queued,) = r.lrange("user.high", 0, -1)
    created = key_id(path.read_text().strip().encode())
    assert PASSWORD.encode() not in queued and f"{PREFIX}{created}:".encode() in queued


def test_without_a_key_and_nowhere_to_create_one_a_secret_is_refused_and_nothing_is_queued(
        platform: Platform, r: redis.Redis, tmp_path: Any) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    keyless = Dispatcher(Platform(platform.settings.model_copy(
        update={"encryption_keys": None, "data_dir": blocked / "data"})))
    with pytest.raises(DispatchError, match=r"^no encryption key \(user_login has secret fields\) and none can be "
                                            r"created in .*: set MEETINGTASKS_ENCRYPTION_KEYS"):
        keyless.dispatch("user_login", {"username": "ann", "password": PASSWORD})
    with pytest.raises(DispatchError, match="no encryption key"):
        keyless.dispatch_batch([("user_login", {"username": "ann", "password": PASSWORD})])
    assert r.llen("user.high") == 0
    # a type without secret fields needs no key
    keyless.dispatch("user_status_change", {"user_id": "u1", "status": "away"})
    assert r.llen("user.normal") == 1


# --- the rule itself (no Redis) ---------------------------------------------------------------------------------
class Marked(BaseModel):
    name: str
    api_key: Annotated[str, Secret]
    pin: SecretStr | None = None


def test_secret_fields_are_secretstr_or_marked_and_decided_once_per_model() -> None:
    assert secret_fields(Marked) == ("api_key", "pin")
    assert secret_fields(Marked) is secret_fields(Marked)


def test_sealing_round_trip_is_idempotent_and_names_the_key_id_when_it_cannot_open() -> None:
    ring = Keyring(parse_keys(f"{NEW_KEY},{OLD_KEY}"))
    sealed = seal_payload(("api_key",), {"name": "n", "api_key": "k-1"}, ring)
    assert sealed["api_key"].startswith(f"{PREFIX}{key_id(NEW_KEY.encode())}:")
    assert seal_payload(("api_key",), sealed, ring) is sealed  # sealed values are not sealed twice
    assert open_payload(("api_key",), sealed, ring) == {"name": "n", "api_key": "k-1"}
    assert open_payload(("api_key",), {"name": "n", "api_key": "plain"}, ring)["api_key"] == "plain"
    old_only = Keyring(parse_keys(OLD_KEY))
    with pytest.raises(UndecryptableSecret, match=key_id(NEW_KEY.encode())):
        open_payload(("api_key",), sealed, old_only)
    assert mask({"a": [sealed["api_key"]], "b": "x"}) == {"a": [MASK], "b": "x"}
    assert mask_text(json.dumps(sealed)) == json.dumps({"name": "n", "api_key": MASK})


@pytest.mark.slow
def test_a_field_marked_secret_on_its_model_is_masked_in_celery_inspect_and_opened_for_handler_and_caller(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given an ai worker running a type whose api_key is Annotated[str, Secret] and whose result echoes it secret
    start_worker("ai", env_overrides={"MEETINGTASKS_INCLUDE": secret_tasks.INCLUDE})
    api_key = "sk-live-0123456789abcdef"
    handle = Dispatcher(platform).dispatch("t_secret_hold", {"tag": "held", "api_key": api_key})
    wait_for(lambda: r.exists("test:secret-seen:held"), 20, message="the task to start")

    # When an operator asks the worker what it runs (`celery inspect active`, what Flower's worker page shows)
    app = create_flower_app(platform.settings.model_copy(update={"flower_basic_auth": SecretStr("ops:pw")}))
    active = wait_for(lambda: [t for tasks in (app.control.inspect(timeout=2).active() or {}).values()
                               for t in tasks if t["id"] == handle.id], 20, message="the task in inspect active")

    # Then the key shows as *** there, while the handler got the real key and the caller gets it back
    assert active[0]["args"] == [{"tag": "held", "api_key": MASK}], active  # type: ignore[index]
    r.set("test:release:held", 1)
    assert handle.wait(timeout=20) == {"tag": "held", "echo": api_key}
    assert r.get("test:secret-seen:held") == hashlib.sha256(api_key.encode()).hexdigest().encode()
    assert api_key not in handle.info().fields["result"]


def test_a_quarantined_foreign_message_is_stored_with_its_secret_sealed(platform: Platform, r: redis.Redis) -> None:
    # Given a foreign producer's user_login message with the password in plain text (also in its argsrepr)
    body = json.dumps([[{"username": "ann", "password": PASSWORD}], {}, {}])
    envelope = {"body": body, "content-type": "application/json", "content-encoding": "utf-8",
                "headers": {"lang": "py", "task": "user_login", "id": "q-1",
                            "argsrepr": f"[{{'password': '{PASSWORD}'}}]"},
                "properties": {"delivery_tag": "q-1", "delivery_info": {"exchange": "", "routing_key": "user.high"}}}

    # When the worker dead-letters it without running it (e.g. its hard time limit killed the run)
    letter_id = quarantine_envelope(platform, "user", envelope, "TimeLimitExceeded", "killed")

    # Then the stored letter holds the password only sealed, and replaying it would run with it
    stored = r.hget(platform.keys.dlq("user"), letter_id)
    assert stored is not None and PASSWORD.encode() not in stored
    letter = platform.dead_letters.get(r, letter_id)
    assert letter.payload["password"].startswith(PREFIX)
    ring = keyring(platform.settings)
    kept = json.loads(json.loads(letter.message or "")["body"])[0][0]
    assert open_payload(("password",), kept, ring) == {"username": "ann", "password": PASSWORD}


def test_a_result_is_stored_sealed_and_shown_masked_in_one_pass() -> None:
    ring = Keyring(parse_keys(NEW_KEY))
    stored, shown = seal_and_mask_result({"a": 1, "t": SecretStr("tok")}, lambda: ring)
    assert shown == {"a": 1, "t": MASK} and ring.open(stored["t"]) == "tok"
    # a run's cached result (sealed already) is stored as it is and shown masked
    again, shown_again = seal_and_mask_result(stored, lambda: ring)
    assert again is stored and shown_again == {"a": 1, "t": MASK}
    # a result without secrets is the same object both ways, and no keyring is asked for
    plain = {"a": 1, "b": "text"}
    assert seal_and_mask_result(plain, lambda: pytest.fail("no keyring needed")) == (plain, plain)
