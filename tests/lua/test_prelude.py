"""The scripts' conventions and their prelude: every script file has its header, loads, compiles on a real Redis
and has a direct test here; the generated part of the prelude says what :mod:`meetingtasks.status_schema` says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from meetingtasks.lua import PRELUDE_DIR, SCRIPTS_DIR, LuaScript, prelude_part, script_source
from meetingtasks.metrics.rollup import SLOT_S, bucket_of
from meetingtasks.status_schema import TERMINAL_NAMES, Status, history_line, parse_history, status_event

SCRIPT_NAMES = sorted(path.stem for path in SCRIPTS_DIR.glob("*.lua"))
TESTS = Path(__file__).parent


def test_there_are_scripts() -> None:
    assert len(SCRIPT_NAMES) >= 17, SCRIPT_NAMES


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_has_a_header_naming_its_keys_argv_and_reply(name: str) -> None:
    text = (SCRIPTS_DIR / f"{name}.lua").read_text()
    header = text.split("\n\n")[0]
    assert header.startswith(f"-- {name}: "), f"{name}.lua must start with '-- {name}: <what it does>'"
    assert re.search(r"^-- KEYS(\[1\]|: none|\[1\.\.\.\])", header, re.MULTILINE), f"{name}.lua: no KEYS lines"
    assert re.search(r"^-- ARGV(\[1\]|: none)", header, re.MULTILINE), f"{name}.lua: no ARGV lines"
    assert re.search(r"^-- Returns", header, re.MULTILINE), f"{name}.lua: no Returns line"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_binds_its_fixed_arguments_to_named_locals(name: str) -> None:
    text = (SCRIPTS_DIR / f"{name}.lua").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    first_use = code.split("\n\n", 1)[-1]  # below the block of locals at the top
    assert not re.search(r"(KEYS|ARGV)\[\d+\]", first_use), f"{name}.lua reads a fixed KEYS/ARGV below its locals"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_compiles_on_redis(name: str, r: redis.Redis) -> None:
    source = script_source(name)
    if name == "claim_and_enqueue":
        source = "local embedded = {}\n" + source  # what dedup.once_script puts before it
    assert r.script_load(source) == LuaScript(source).sha


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_has_a_direct_test(name: str) -> None:
    tests = "".join(path.read_text() for path in TESTS.glob("test_*.py") if path.name != Path(__file__).name)
    # claim_and_enqueue.lua is loaded through dedup.once_script, which puts the embedded scripts before it
    loads = "once_script(" if name == "claim_and_enqueue" else f'LuaScript.load("{name}")'
    assert loads in tests, f"no test in tests/lua/ loads {name}.lua"


def test_an_unknown_prelude_part_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown Lua prelude part 'nonesuch'"):
        prelude_part("nonesuch")


def test_every_hand_written_prelude_part_is_used() -> None:
    used = " ".join(re.findall(r"^-- prelude: (.*)$", "".join(p.read_text() for p in SCRIPTS_DIR.glob("*.lua")),
                               re.MULTILINE))
    for part in PRELUDE_DIR.glob("*.lua"):
        assert part.stem in used, f"prelude/{part.name} is used by no script"


def _lua_eval(r: redis.Redis, expression: str, *args: str) -> Any:
    return r.eval(prelude_part("record") + f"return {expression}", 0, *args)


def test_the_generated_terminal_set_is_the_python_one(r: redis.Redis) -> None:
    for status in Status:
        in_lua = _lua_eval(r, "MT_TERMINAL[ARGV[1]] and 1 or 0", status.value)
        assert in_lua == (1 if status.value in TERMINAL_NAMES else 0), status


def test_the_generated_history_line_is_the_python_one(r: redis.Redis) -> None:
    now = 1733380000.123456
    line = _lua_eval(r, "mt_history_line(ARGV[1], ARGV[2], ARGV[3])", "RETRYING", repr(now), "3")
    assert line.decode() == history_line(Status.RETRYING, now, 3)
    assert parse_history(line.decode()) == [(Status.RETRYING, now, 3)]


def test_the_generated_event_head_is_the_python_one(r: redis.Redis) -> None:
    now = 1733380000.5
    expression = "MT_EVENT_START .. '\"' .. ARGV[1] .. '\"' .. mt_event_after_id(ARGV[2], ARGV[3], ARGV[4]) .. '}'"
    event = _lua_eval(r, expression, "t-1", "QUEUED", repr(now), "2")
    assert orjson.loads(event) == status_event("t-1", Status.QUEUED, now, 2)
    assert list(orjson.loads(event)) == list(status_event("t-1", Status.QUEUED, now, 2))  # the same order too


def test_an_application_script_loads_from_its_own_directory_with_the_platform_prelude(tmp_path: Path,
                                                                                       r: redis.Redis) -> None:
    (tmp_path / "is_final.lua").write_text("-- is_final: whether a status is terminal\n-- KEYS: none\n"
                                           "-- ARGV[1]  status\n-- Returns 1 or 0.\n-- prelude: record\n"
                                           "local status = ARGV[1]\n\nreturn MT_TERMINAL[status] and 1 or 0\n")
    script = LuaScript.load("is_final", tmp_path)
    assert script.name == "is_final"
    assert script(r, [], ["FAILED"]) == 1 and script(r, [], ["QUEUED"]) == 0


def test_a_missing_script_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nonesuch\.lua"):
        LuaScript.load("nonesuch", tmp_path)


def test_the_generated_rollup_bucket_rule_is_the_python_one(r: redis.Redis) -> None:
    for seconds in (0.0, 0.0000004, 0.000002, 0.0015, 0.25, 3.0, 7_200.0):
        in_lua = r.eval(prelude_part("rollup") + "return mt_bucket(ARGV[1])", 0, repr(seconds))
        assert in_lua == bucket_of(seconds), seconds
    assert r.eval(prelude_part("rollup") + "return MT_ROLLUP_SLOT_S * 1000 + (MT_ROLLUP_COUNTED[ARGV[1]] and 1 or 0)",
                  0, "QUEUED") == SLOT_S * 1000
