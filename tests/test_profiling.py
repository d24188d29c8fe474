"""``meetingtasks profile TYPE --runs N``: the next N runs of a type on any worker are profiled, kept
(bounded) and printed; workers learn of a request within ``profile_poll_interval_s``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis
from pyinstrument.session import Session

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from meetingtasks.worker.profiling import Profile, ProfileGate, Profiles, merged_samples
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

INCLUDE = {"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.profile_tasks"}
SLOW_FUNCTION = "deliberately_slow_checksum"


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "meetingtasks", *args], env={**env, **INCLUDE}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def frame_names(frame: object) -> set[str]:
    names = {getattr(frame, "function", "")}
    for child in getattr(frame, "children", []):
        names |= frame_names(child)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("pool", [("--pool", "threads", "--concurrency", "2"), ("--pool", "prefork",
                                                                                 "--concurrency", "1")])
def test_a_profiled_run_names_the_handlers_own_slow_function(
    platform: Platform, r: redis.Redis, env: dict[str, str], start_worker: Callable[..., WorkerProcess],
    pool: tuple[str, ...],
) -> None:
    import tests.support.profile_tasks  # noqa: F401 - the type, to dispatch it from here

    # Given an ai worker running t_profiled, whose handler spends its time in deliberately_slow_checksum
    start_worker("ai", *pool, env_overrides={**INCLUDE, "MEETINGTASKS_PROFILE_POLL_INTERVAL_S": "0.2"})
    # When `meetingtasks profile t_profiled --runs 2` is asked, and three runs follow
    proc = cli(env, "profile", "t_profiled", "--runs", "2", "--timeout", "120")
    wait_for(lambda: r.hget(platform.keys.profile_requests, "t_profiled") is not None, 30,
             message="the profile request in Redis")
    dispatcher = Dispatcher(platform)
    for n in range(3):
        dispatcher.dispatch("t_profiled", {"tag": f"run{n}"}).wait(timeout=60)
    out, err = proc.communicate(timeout=120)

    # Then it printed two profiles, each naming the handler's slow function, and ended with 0
    assert proc.returncode == 0, err
    assert out.count("profile ") >= 2 and out.count(SLOW_FUNCTION) >= 2
    # And only two runs were profiled: the request is used up and two profiles are kept
    kept = Profiles(platform).kept("t_profiled")
    assert len(kept) == 2 and not r.hexists(platform.keys.profile_requests, "t_profiled")
    # And each keeps pyinstrument's session, which reads back into the frame tree a flame view draws
    for profile in kept:
        assert profile.session is not None and profile.duration_s >= 0.15
        session = Session.from_json(profile.session)
        assert SLOW_FUNCTION in frame_names(session.root_frame())
    # And --show prints the kept ones without asking for more
    shown = cli(env, "profile", "t_profiled", "--show")
    show_out, show_err = shown.communicate(timeout=60)
    assert shown.returncode == 0, show_err
    assert show_out.count(SLOW_FUNCTION) >= 2 and not r.exists(platform.keys.profile_requests)


def test_samples_of_one_stack_merge_into_one_record_and_the_tree_is_unchanged() -> None:
    # Given a real pyinstrument session of a busy loop: hundreds of 1 ms samples, most of one stack
    from pyinstrument import Profiler

    from tests.support.profile_tasks import deliberately_slow_checksum

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    deliberately_slow_checksum(0.1)
    raw = profiler.stop().to_json()
    # When its samples are merged
    merged = merged_samples(raw)
    # Then there is one record per distinct stack, far fewer than the samples, and no time is lost
    stacks = [tuple(stack) for stack, _ in raw["frame_records"]]
    assert len(merged["frame_records"]) == len(set(stacks)) < len(stacks) / 5
    assert sum(t for _, t in merged["frame_records"]) == pytest.approx(sum(t for _, t in raw["frame_records"]))
    # And the call tree pyinstrument builds from it is the same, function by function and time by time
    def times(frame: object, into: dict[str, float]) -> dict[str, float]:
        name = f"{getattr(frame, 'function', '')}:{getattr(frame, 'line_no', '')}"
        into[name] = into.get(name, 0.0) + float(getattr(frame, "time", 0.0))
        for child in getattr(frame, "children", []):
            times(child, into)
        return into
    before, after = times(Session.from_json(raw).root_frame(), {}), times(Session.from_json(merged).root_frame(), {})
    assert before.keys() == after.keys() and SLOW_FUNCTION.split(":")[0] in {k.split(":")[0] for k in after}
    assert all(after[k] == pytest.approx(before[k]) for k in before)


def make_profile(task_type: str, n: int, text: str = "text") -> Profile:
    return Profile(id=f"p{n}", task_type=task_type, task_id=f"t{n}", worker="w", started_at=time.time(),
                   duration_s=0.01, error=None, text=text, session={"frames": ["x" * 100]})


def test_profiles_are_kept_bounded_per_type(platform: Platform, r: redis.Redis) -> None:
    # Given a platform that keeps 3 profiles per type, each at most 8 KiB
    bounded = Platform(platform.settings.model_copy(update={"profile_keep": 3, "profile_max_bytes": 8192}))
    profiles = Profiles(bounded)
    # When five profiles of one type are saved, then one of another type far over the size cap
    for n in range(5):
        profiles.save(make_profile("t_echo", n))
    profiles.save(make_profile("t_record", 9, text="y" * 20_000))
    # Then the newest three of the first are kept, newest first, with a lifetime
    assert [p.id for p in profiles.kept("t_echo")] == ["p4", "p3", "p2"]
    assert 0 < r.ttl(platform.keys.profiles("t_echo")) <= 7 * 86_400
    # And the oversize one lost its session and had its text cut, within the cap
    (big,) = profiles.kept("t_record")
    assert big.session is None and "[cut at profile_max_bytes=8192]" in big.text
    stored = r.lindex(platform.keys.profiles("t_record"), 0)
    assert stored is not None and len(stored) <= 8192


def test_runs_are_claimed_once_each_and_the_gate_learns_within_its_interval(platform: Platform) -> None:
    # Given a gate that refreshes every 0.1 s and nothing requested
    fast = Platform(platform.settings.model_copy(update={"profile_poll_interval_s": 0.1}))
    gate, profiles = ProfileGate(), Profiles(fast)
    assert not gate.wanted(fast, "t_echo")
    # When two runs are requested: the gate says so within its interval, and exactly two claims succeed
    assert profiles.request("t_echo", 2) == 2
    wait_for(lambda: gate.wanted(fast, "t_echo"), 5, message="the gate to see the request")
    assert [profiles.claim("t_echo") for _ in range(3)] == [True, True, False]
    assert profiles.requested() == {}
    wait_for(lambda: not gate.wanted(fast, "t_echo"), 5, message="the gate to see the request used up")


@pytest.mark.slow
def test_an_unknown_type_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    proc = cli(env, "profile", "t_no_such_type", "--runs", "2")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().count("\n") == 0 and "unknown task type 't_no_such_type'" in err


@pytest.mark.slow
def test_no_worker_ends_with_one_line_and_exit_1_and_the_request_stays(platform: Platform, r: redis.Redis,
                                                                       env: dict[str, str]) -> None:
    proc = cli(env, "profile", "t_echo", "--runs", "1", "--timeout", "0.5", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and json.loads(out) == []
    assert "only 0 of 1 runs of t_echo were profiled" in err.strip().splitlines()[-1]
    assert r.hget(platform.keys.profile_requests, "t_echo") == b"1"
