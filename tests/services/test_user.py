"""The user service's handlers on a real Redis: success, domain refusal, and a redelivered task (same id)
that changes and publishes nothing twice."""

from __future__ import annotations

import time

import pytest
import redis

from meetingtasks import PermanentError
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.user.store import UserStore, token_digest
from meetingtasks.store.platform import Platform
from tests.services.conftest import Published, Run

ANN = {"username": "ann", "email": "ann@example.org", "password": "correct horse"}


def test_register_creates_the_user_with_a_scrypt_hash(run: Run, platform: Platform, r: redis.Redis,
                                                      published: Published) -> None:
    # when ann registers
    result = run("user_register", ANN, task_id="reg-1")

    # then she exists, her password is stored as an scrypt hash, and user.registered was published once
    user = UserStore(platform).get(result["user_id"])
    assert user is not None and user.username == "ann" and user.status == "offline"
    assert user.password_hash.startswith("scrypt$16384$8$1$") and "correct horse" not in user.password_hash
    assert published.payloads("user_events", "user.registered") == [
        {"user_id": result["user_id"], "username": "ann", "display_name": "ann"}]


def test_register_refuses_a_taken_name_in_any_case(run: Run, published: Published) -> None:
    run("user_register", ANN)
    with pytest.raises(PermanentError, match="username 'ANN' is taken"):
        run("user_register", {**ANN, "username": "ANN"})
    assert len(published("user_events", "user.registered")) == 1


def test_register_delivered_twice_registers_once(run: Run, r: redis.Redis, platform: Platform,
                                                 published: Published) -> None:
    # given a registration that ran (its worker died before acknowledging it)
    first = run("user_register", ANN, task_id="reg-1")
    # when the same task is delivered again
    second = run("user_register", ANN, task_id="reg-1")
    # then it is the same user, not "name taken", and the event is not published again
    assert second == first
    assert len(published("user_events", "user.registered")) == 1
    assert len(r.keys(platform.keys.user("*"))) == 1


def test_login_checks_the_password_and_issues_an_expiring_session(run: Run, platform: Platform,
                                                                  published: Published) -> None:
    user_id = run("user_register", ANN)["user_id"]

    result = run("user_login", {"username": "ann", "password": "correct horse"})

    store = UserStore(platform)
    session = store.login(result["token"], now=time.time())
    assert session is not None and session["user_id"] == user_id
    ttl = meeting_settings(platform).login_session_ttl_s
    assert abs(result["expires_at"] - (time.time() + ttl)) < 30
    assert store.get(user_id).status == "online"  # type: ignore[union-attr]
    assert [e["type"] for e in published("user_events")] == ["user.registered", "user.logged_in",
                                                              "user.status_changed"]


@pytest.mark.parametrize("username,password", [("ann", "wrong password"), ("nobody", "correct horse")])
def test_login_refuses_a_wrong_password_or_name_alike(run: Run, published: Published, username: str,
                                                      password: str) -> None:
    run("user_register", ANN)
    with pytest.raises(PermanentError, match=r"^wrong username or password$"):
        run("user_login", {"username": username, "password": password})
    assert published("user_events", "user.logged_in") == []


def test_login_delivered_twice_issues_one_session(run: Run, r: redis.Redis, platform: Platform,
                                                  published: Published) -> None:
    user_id = run("user_register", ANN)["user_id"]
    first = run("user_login", {"username": "ann", "password": "correct horse"}, task_id="login-1")
    second = run("user_login", {"username": "ann", "password": "correct horse"}, task_id="login-1")
    assert second["token"] == first["token"]
    assert r.smembers(platform.keys.user_logins(user_id)) == {token_digest(first["token"]).encode()}
    assert len(published("user_events", "user.logged_in")) == 1


def test_profile_update_changes_only_what_differs(run: Run, platform: Platform, published: Published) -> None:
    user_id = run("user_register", ANN)["user_id"]

    result = run("user_profile_update", {"user_id": user_id, "display_name": "Ann", "bio": "hi"})
    again = run("user_profile_update", {"user_id": user_id, "display_name": "Ann", "bio": "hi"})

    assert sorted(result["changed"]) == ["bio", "display_name"] and again["changed"] == []
    assert UserStore(platform).get(user_id).display_name == "Ann"  # type: ignore[union-attr]
    updates = published.payloads("user_events", "user.profile_updated")
    assert len(updates) == 1 and updates[0]["display_name"] == "Ann"


def test_profile_update_refusals(run: Run) -> None:
    with pytest.raises(PermanentError, match="no user 'ghost'"):
        run("user_profile_update", {"user_id": "ghost", "bio": "x"})
    with pytest.raises(PermanentError, match="at least one of"):
        run("user_profile_update", {"user_id": "ghost"})


def test_profile_update_delivered_twice_publishes_once(run: Run, published: Published) -> None:
    user_id = run("user_register", ANN)["user_id"]
    first = run("user_profile_update", {"user_id": user_id, "bio": "hello"}, task_id="p-1")
    second = run("user_profile_update", {"user_id": user_id, "bio": "hello"}, task_id="p-1")
    # the redelivery reports what the first run changed, and nothing is published twice
    assert first == second == {"user_id": user_id, "changed": ["bio"]}
    assert len(published("user_events", "user.profile_updated")) == 1


def test_status_change_tracks_the_meeting(run: Run, platform: Platform, published: Published) -> None:
    user_id = run("user_register", ANN)["user_id"]

    run("user_status_change", {"user_id": user_id, "status": "busy", "meeting_id": "m1"})
    assert UserStore(platform).get(user_id).meeting_id == "m1"  # type: ignore[union-attr]
    # online "after meeting m2" does not apply: she is busy in m1
    assert run("user_status_change", {"user_id": user_id, "status": "online", "meeting_id": "m2"})["changed"] is False
    run("user_status_change", {"user_id": user_id, "status": "offline"})

    changes = published.payloads("user_events", "user.status_changed")
    assert [(c["status"], c.get("meeting_id")) for c in changes] == [("busy", "m1"), ("offline", "m1")]


def test_status_change_refuses_an_unknown_user(run: Run) -> None:
    with pytest.raises(PermanentError, match="no user 'ghost'"):
        run("user_status_change", {"user_id": "ghost", "status": "away"})


def test_status_change_delivered_twice_publishes_once(run: Run, published: Published) -> None:
    user_id = run("user_register", ANN)["user_id"]
    first = run("user_status_change", {"user_id": user_id, "status": "away"}, task_id="s-1")
    second = run("user_status_change", {"user_id": user_id, "status": "away"}, task_id="s-1")
    assert first == second and first["changed"] is True
    assert len(published("user_events", "user.status_changed")) == 1


def test_sessions_expire_sends_users_offline(run: Run, platform: Platform, r: redis.Redis,
                                            published: Published) -> None:
    # given ann logged in twice and bob once, ann's sessions both expired, bob's still valid
    ann = run("user_register", ANN)["user_id"]
    bob = run("user_register", {**ANN, "username": "bob"})["user_id"]
    tokens = [run("user_login", {"username": "ann", "password": "correct horse"})["token"] for _ in range(2)]
    run("user_login", {"username": "bob", "password": "correct horse"})
    for token in tokens:
        r.zadd(platform.keys.logins, {token_digest(token): time.time() - 1})

    # when the beat job runs (twice, as a redelivery)
    result = run("user_sessions_expire", {}, task_id="sweep-1")
    assert run("user_sessions_expire", {}, task_id="sweep-1") == result

    # then ann's sessions are gone and she is offline; bob is untouched
    store = UserStore(platform)
    assert result == {"expired": 2, "offline": [ann]}
    assert store.login(tokens[0], now=time.time()) is None and store.logins_of(ann) == 0
    assert store.get(ann).status == "offline" and store.get(bob).status == "online"  # type: ignore[union-attr]
    offline = [c for c in published.payloads("user_events", "user.status_changed") if c["status"] == "offline"]
    assert offline == [{"user_id": ann, "status": "offline", "previous": "online", "reason": "session expired"}]
