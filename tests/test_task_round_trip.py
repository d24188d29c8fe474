"""bench.task_round_trip times every drained task's own Redis call, and the same call alone."""

from __future__ import annotations

import re

import pytest

from bench.task_round_trip import ALONE_CALLS, main


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_every_task_of_the_drain_sends_its_round_trip(pool: str, capsys: pytest.CaptureFixture[str]) -> None:
    # When a worker drains 1,000 counting tasks that time their INCR
    assert main(["--pool", pool, "--tasks", "1000"]) == 0
    out = capsys.readouterr().out
    # Then the report has a timing of each of them (none lost, none twice) and of each call made alone
    rows = re.findall(r"^\| (alone|in the \w+ drain)[^|]* \| ([\d,]+) \|", out, re.M)
    calls = {where: int(n.replace(",", "")) for where, n in rows}
    assert calls == {"alone": ALONE_CALLS, f"in the {pool} drain": 1000}, out
    assert re.search(r"the INCR took \d+% of each task's time", out), out
