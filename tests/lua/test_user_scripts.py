"""The user service's once-scripts, called directly (``meetingtasks/services/lua/user_*.lua``), and the once-only
rule they share (``prelude/once.lua``)."""

from __future__ import annotations

import orjson
import pytest
import redis

from meetingtasks.services.operation import once_script
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Change

REGISTER = once_script("user_register")
PROFILE = once_script("user_profile")
STATUS = once_script("user_status")
EXPIRE_LOGINS = once_script("user_expire_logins")


def test_a_change_runs_once_per_task_and_keeps_its_outcome(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    call_keys = [keys.operation("t-1"), keys.username("ann"), keys.user("u-1")]
    first = REGISTER(r, call_keys, ["m:register", 600, "u-1", "username", "ann"])
    assert orjson.loads(first) == {"created": "u-1"}
    assert r.hget(keys.operation("t-1"), "m:register") == first and 0 < r.ttl(keys.operation("t-1")) <= 600
    r.delete(keys.user("u-1"))
    # The redelivered task gets the first outcome and changes nothing, though the name is held now.
    assert REGISTER(r, call_keys, ["m:register", 600, "u-1", "username", "ann"]) == first
    assert not r.exists(keys.user("u-1"))
    # Another change of the same task is another outcome.
    other = REGISTER(r, call_keys, ["m:register-again", 600, "u-1", "username", "ann"])
    assert orjson.loads(other) == {"taken": "u-1"}


def test_a_failed_change_records_no_outcome(platform: Platform, r: redis.Redis) -> None:
    keys = platform.keys
    r.hset(keys.user("u-1"), "username", "ann")
    with pytest.raises(redis.ResponseError):
        # An odd field list: HSET refuses it, and the script fails before its outcome is recorded.
        PROFILE(r, [keys.operation("t-1"), keys.user("u-1")], ["m:profile", 600, "1.0", "bio"])
    assert not r.exists(keys.operation("t-1"))


def test_register_claims_a_free_name(platform: Platform, r: redis.Redis, change: Change) -> None:
    keys = platform.keys
    assert change(REGISTER, [keys.username("ann"), keys.user("u-1")], ["u-1", "username", "ann", "email", "a@x"]) \
        == {"created": "u-1"}
    assert r.get(keys.username("ann")) == b"u-1"
    assert r.hgetall(keys.user("u-1")) == {b"username": b"ann", b"email": b"a@x"}
    assert change(REGISTER, [keys.username("ann"), keys.user("u-2")], ["u-2", "username", "ann"]) == {"taken": "u-1"}
    assert not r.exists(keys.user("u-2"))


def test_profile_writes_only_what_differs(platform: Platform, r: redis.Redis, change: Change) -> None:
    user = platform.keys.user("u-1")
    assert change(PROFILE, [user], ["5.0", "bio", "hi"]) == {"unknown": True}
    r.hset(user, mapping={"bio": "hi", "display_name": "Ann"})
    assert change(PROFILE, [user], ["5.0", "bio", "hi"]) == {"changed": {}, "n": 0}  # an empty Lua array: {}
    assert r.hget(user, "updated_at") is None
    assert change(PROFILE, [user], ["6.0", "bio", "hi", "display_name", "Ann B"]) == {"changed": ["display_name"],
                                                                                    "n": 1}
    assert r.hmget(user, "display_name", "updated_at") == [b"Ann B", b"6.0"]


def test_status_enters_and_leaves_meetings(platform: Platform, r: redis.Redis, change: Change) -> None:
    user = platform.keys.user("u-1")
    assert change(STATUS, [user], ["online", "", "1.0", ""]) == {"unknown": True}
    r.hset(user, "username", "ann")
    assert change(STATUS, [user], ["busy", "m-1", "2.0", ""]) == {"changed": True, "previous": "offline",
                                                                  "status": "busy", "meeting_id": "m-1"}
    assert r.hmget(user, "status", "meeting_id", "updated_at") == [b"busy", b"m-1", b"2.0"]
    # Back from another meeting than the one the user is in: nothing changes.
    assert change(STATUS, [user], ["online", "m-2", "3.0", ""]) == {"changed": False, "previous": "busy",
                                                                    "status": "busy", "meeting_id": "m-1"}
    # Only from a status the user is not in: nothing changes.
    assert change(STATUS, [user], ["offline", "", "3.0", "online"])["changed"] is False
    # Offline leaves the meeting, and the outcome names it for the meeting service.
    assert change(STATUS, [user], ["offline", "", "4.0", "busy"]) == {"changed": True, "previous": "busy",
                                                                      "status": "offline", "meeting_id": "m-1"}
    assert r.hmget(user, "status", "meeting_id") == [b"offline", b""]
    assert change(STATUS, [user], ["offline", "", "5.0", ""])["changed"] is False


def test_expire_logins_removes_the_expired_and_names_users_left_without_one(platform: Platform, r: redis.Redis,
                                                                           change: Change) -> None:
    keys = platform.keys
    logins = (("d-old", "u-1", 10), ("d-old2", "u-2", 20), ("d-new", "u-2", 99), ("d-3", "u-3", 30))
    for digest, user, expires in logins:
        r.hset(keys.login(digest), "user_id", user)
        r.zadd(keys.logins, {digest: expires})
        r.sadd(keys.user_logins(user), digest)
    args = [keys.login(""), keys.user_logins("")]
    assert change(EXPIRE_LOGINS, [keys.logins], ["25", 10, *args]) == {"expired": 2, "users": ["u-1"], "n": 1}
    assert not r.exists(keys.login("d-old")) and not r.exists(keys.login("d-old2"))
    assert r.smembers(keys.user_logins("u-2")) == {b"d-new"}  # u-2 keeps a login
    assert change(EXPIRE_LOGINS, [keys.logins], ["50", 1, *args]) == {"expired": 1, "users": ["u-3"], "n": 1}
    assert r.zrange(keys.logins, 0, -1) == [b"d-new"]
    assert change(EXPIRE_LOGINS, [keys.logins], ["50", 10, *args]) == {"expired": 0, "users": {}, "n": 0}
