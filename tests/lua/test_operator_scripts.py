"""dead_letter_page.lua, dead_letter_count.lua (the operator console's dead-letter listing) and
claim_profile_run.lua (meetingtasks.worker.profiling), called directly."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from meetingtasks.lua import LuaScript

PAGE = LuaScript.load("dead_letter_page")
COUNT = LuaScript.load("dead_letter_count")
CLAIM_PROFILE_RUN = LuaScript.load("claim_profile_run")
LETTERS = ["dlq", "dlq-index"]
REASON_BOOM = '"reason":"boom"'


def _letters(r: redis.Redis, n: int) -> None:
    """Letters l-00 .. l-<n-1>, failed at 1000 ms * i; every third one for reason "boom", the rest "lost"."""
    for i in range(n):
        letter_id = f"l-{i:02d}"
        r.hset("dlq", letter_id, orjson.dumps({"id": letter_id, "reason": "boom" if i % 3 == 0 else "lost"}))
        r.zadd("dlq-index", {letter_id: 1000 * i})


def _page(reply: list[Any]) -> tuple[bytes, list[bytes]]:
    """(where it stopped, the page's "<score> <id>" keys)."""
    return reply[0], reply[1::2]


def test_dead_letter_page_walks_newest_first_from_the_cursor_within_the_range(r: redis.Redis) -> None:
    _letters(r, 10)
    stop, keys = _page(PAGE(r, LETTERS, ["+inf", "", "-inf", 3, 1000]))
    assert stop == b"" and keys == [b"9000 l-09", b"8000 l-08", b"7000 l-07"]
    assert orjson.loads(PAGE(r, LETTERS, ["+inf", "", "-inf", 1, 1000])[2]) == {"id": "l-09", "reason": "boom"}
    # The next page starts at the last one shown (its score, and ids from it on were shown).
    _, keys = _page(PAGE(r, LETTERS, ["7000", "l-07", "-inf", 3, 1000]))
    assert keys == [b"6000 l-06", b"5000 l-05", b"4000 l-04"]
    _, keys = _page(PAGE(r, LETTERS, ["5000", "", "2000", 10, 1000]))  # both ends inclusive
    assert keys == [b"5000 l-05", b"4000 l-04", b"3000 l-03", b"2000 l-02"]
    _, keys = _page(PAGE(r, LETTERS, ["+inf", "", "-inf", 10, 1000, REASON_BOOM, ""]))
    assert keys == [b"9000 l-09", b"6000 l-06", b"3000 l-03", b"0 l-00"]
    assert _page(PAGE(r, ["none", "none-index"], ["+inf", "", "-inf", 10, 1000])) == (b"", [])


def test_dead_letter_page_stops_at_its_read_budget_and_says_where(r: redis.Redis) -> None:
    _letters(r, 1200)  # more than one chunk of 500
    stop, keys = _page(PAGE(r, LETTERS, ["+inf", "", "-inf", 10, 600, '"reason":"none such"']))
    assert keys == [] and stop == b"200000 l-200"  # read 1000 (two chunks), the last of them l-200
    stop, keys = _page(PAGE(r, LETTERS, ["+inf", "", "-inf", 2, 600, REASON_BOOM]))
    assert stop == b"" and keys == [b"1197000 l-1197", b"1194000 l-1194"]


def test_dead_letter_count_counts_matches_within_its_budget(r: redis.Redis) -> None:
    _letters(r, 1500)
    assert COUNT(r, LETTERS, ["+inf", "-inf", 0]) == [1500, 0, 1]  # no needles: ZCOUNT
    assert COUNT(r, LETTERS, ["9000", "3000", 0, ""]) == [7, 0, 1]
    assert COUNT(r, LETTERS, ["+inf", "-inf", 0, REASON_BOOM]) == [500, 1500, 1]
    assert COUNT(r, LETTERS, ["8999", "0", 0, REASON_BOOM]) == [3, 9, 1]  # l-00, l-03, l-06
    assert COUNT(r, LETTERS, ["+inf", "-inf", 1000, REASON_BOOM]) == [333, 1000, 0]  # stopped: not exact


def test_claim_profile_run_hands_out_exactly_the_runs_requested(r: redis.Redis) -> None:
    r.hset("profile-requests", mapping={"ai.echo": 2, "ai.bad": "x", "ai.none": 0})
    assert CLAIM_PROFILE_RUN(r, ["profile-requests"], ["ai.echo"]) == [b"claimed", 1, b"left", 1]
    assert CLAIM_PROFILE_RUN(r, ["profile-requests"], ["ai.echo"]) == [b"claimed", 1, b"left", 0]
    assert CLAIM_PROFILE_RUN(r, ["profile-requests"], ["ai.echo"]) == [b"claimed", 0, b"left", 0]
    for task_type in ("ai.bad", "ai.none", "ai.unknown"):  # not a count, or none left: cleared, not claimed
        assert CLAIM_PROFILE_RUN(r, ["profile-requests"], [task_type]) == [b"claimed", 0, b"left", 0]
    assert r.exists("profile-requests") == 0
