"""The scripts' conventions and their prelude: every script file (the platform's and the meeting services') has its
header, loads, compiles on a real Redis and has a direct test here; the generated part of the prelude says what
:mod:`meetingtasks.store.status_schema` says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from meetingtasks.lua import SCRIPTS_DIR, LuaScript, prelude_names, prelude_part, script_source
from meetingtasks.services import operation
from meetingtasks.store.rollup import SLOT_S, bucket_of
from meetingtasks.store.status_schema import TERMINAL_NAMES, Status, history_line, parse_history, status_event

#: Where scripts live: the platform's, and the meeting services' (an application's own folder).
SCRIPT_DIRS = (SCRIPTS_DIR, operation.SCRIPTS_DIR)
SCRIPTS = sorted((path.stem, directory) for directory in SCRIPT_DIRS for path in directory.glob("*.lua"))
SCRIPT_NAMES = [name for name, _ in SCRIPTS]
TESTS = Path(__file__).parent


def test_there_are_scripts() -> None:
    assert len(SCRIPT_NAMES) >= 37, SCRIPT_NAMES
    assert len(set(SCRIPT_NAMES)) == len(SCRIPT_NAMES), "two scripts share a name"


@pytest.mark.parametrize(("name", "directory"), SCRIPTS)
def test_every_script_has_a_header_naming_its_keys_argv_and_reply(name: str, directory: Path) -> None:
    text = (directory / f"{name}.lua").read_text()
    header = text.split("\n\n")[0]
    assert header.startswith(f"-- {name}: "), f"{name}.lua must start with '-- {name}: <what it does>'"
    assert re.search(r"^-- KEYS(\[1\]|: none|\[1\.\.\.\])", header, re.MULTILINE), f"{name}.lua: no KEYS lines"
    assert re.search(r"^-- ARGV(\[1\]|: none)", header, re.MULTILINE), f"{name}.lua: no ARGV lines"
    assert re.search(r"^-- Returns", header, re.MULTILINE), f"{name}.lua: no Returns line"


@pytest.mark.parametrize(("name", "directory"), SCRIPTS)
def test_every_script_binds_its_fixed_arguments_to_named_locals(name: str, directory: Path) -> None:
    text = (directory / f"{name}.lua").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    first_use = code.split("\n\n", 1)[-1]  # below the block of locals at the top
    assert not re.search(r"(KEYS|ARGV)\[\d+\]", first_use), f"{name}.lua reads a fixed KEYS/ARGV below its locals"


@pytest.mark.parametrize(("name", "directory"), SCRIPTS)
def test_every_script_compiles_on_redis(name: str, directory: Path, r: redis.Redis) -> None:
    source = script_source(name, directory)
    if name == "claim_and_enqueue":
        source = "local embedded = {}\n" + source  # what dedup.claim_and_enqueue_script puts before it
    assert r.script_load(source) == LuaScript(source).sha


@pytest.mark.parametrize(("name", "directory"), SCRIPTS)
def test_every_script_has_a_direct_test(name: str, directory: Path) -> None:
    tests = "".join(path.read_text() for path in TESTS.glob("test_*.py") if path.name != Path(__file__).name)
    if name == "claim_and_enqueue":  # loaded through dedup.claim_and_enqueue_script, which embeds scripts before it
        loads = "claim_and_enqueue_script("
    elif directory == operation.SCRIPTS_DIR:  # the meeting services' store changes
        loads = f'once_script("{name}")'
    else:
        loads = f'LuaScript.load("{name}")'
    assert loads in tests, f"no test in tests/lua/ loads {name}.lua"


@pytest.mark.parametrize("name", [name for name, directory in SCRIPTS if directory == operation.SCRIPTS_DIR])
def test_every_meeting_service_script_is_a_once_script(name: str) -> None:
    assert "once" in prelude_names((operation.SCRIPTS_DIR / f"{name}.lua").read_text())
    operation.once_script(name)


@pytest.mark.parametrize("name", [name for name, directory in SCRIPTS if directory == operation.SCRIPTS_DIR])
def test_every_meeting_service_script_is_used_by_a_store(name: str) -> None:
    stores = "".join(path.read_text() for path in operation.SCRIPTS_DIR.parent.glob("*/store.py"))
    assert f'once_script("{name}")' in stores, f"{name}.lua is loaded by no meetingtasks/services/*/store.py"


def test_a_script_without_the_once_rule_is_not_a_once_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plain.lua").write_text("-- plain: no once rule\n-- KEYS: none\n-- ARGV: none\n-- Returns 1.\n"
                                        "return 1\n")
    monkeypatch.setattr(operation, "SCRIPTS_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"plain\.lua is not a once-script"):
        operation.once_script("plain")


def test_an_unknown_prelude_part_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown Lua prelude part 'nonesuch'"):
        prelude_part("nonesuch")


@pytest.mark.parametrize("directory", SCRIPT_DIRS)
def test_every_hand_written_prelude_part_is_used(directory: Path) -> None:
    used = {part for path in directory.glob("*.lua") for part in prelude_names(path.read_text())}
    for part in (directory / "prelude").glob("*.lua"):
        assert part.stem in used, f"{part} is used by no script"


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


def test_an_application_prelude_part_serves_its_own_scripts_only(tmp_path: Path, r: redis.Redis) -> None:
    (tmp_path / "prelude").mkdir()
    (tmp_path / "prelude" / "double.lua").write_text("local function app_double(x) return 2 * x end\n")
    (tmp_path / "twice.lua").write_text("-- twice: doubles\n-- KEYS: none\n-- ARGV[1]  n\n-- Returns 2n.\n"
                                        "-- prelude: record, double\nlocal n = tonumber(ARGV[1])\n\n"
                                        "return app_double(n)\n")
    assert LuaScript.load("twice", tmp_path)(r, [], [21]) == 42
    with pytest.raises(ValueError, match="unknown Lua prelude part 'double'"):
        prelude_part("double")  # not the platform's
    with pytest.raises(ValueError, match=r"unknown Lua prelude part 'triple': .* or .*prelude/triple\.lua"):
        prelude_part("triple", tmp_path)


@pytest.mark.parametrize("part", ["record", "wake", "transition"])
def test_an_application_may_not_define_a_platform_prelude_part_again(part: str, tmp_path: Path) -> None:
    (tmp_path / "prelude").mkdir()
    (tmp_path / "prelude" / f"{part}.lua").write_text("local MT_TERMINAL = {}\n")
    with pytest.raises(ValueError, match=f"Lua prelude part '{part}' is the platform's"):
        prelude_part(part, tmp_path)


def test_a_missing_script_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nonesuch\.lua"):
        LuaScript.load("nonesuch", tmp_path)


def test_the_generated_rollup_bucket_rule_is_the_python_one(r: redis.Redis) -> None:
    for seconds in (0.0, 0.0000004, 0.000002, 0.0015, 0.25, 3.0, 7_200.0):
        in_lua = r.eval(prelude_part("rollup") + "return mt_bucket(ARGV[1])", 0, repr(seconds))
        assert in_lua == bucket_of(seconds), seconds
    assert r.eval(prelude_part("rollup") + "return MT_ROLLUP_SLOT_S * 1000 + (MT_ROLLUP_COUNTED[ARGV[1]] and 1 or 0)",
                  0, "QUEUED") == SLOT_S * 1000
