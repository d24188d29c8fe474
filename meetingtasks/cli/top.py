"""``top``: per task type over the last minute and hour, from the rollups the recording scripts keep
(:mod:`meetingtasks.store.rollup`)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from meetingtasks.cli.main import echo_json, platform_command
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import WINDOWS, reader_for, top_report

_CLEAR = "\x1b[H\x1b[2J"
_COLUMNS = (("started/s", "started_per_s"), ("ok", "succeeded"), ("failed", "failed"), ("dead", "dead_lettered"),
            ("retries", "retries"), ("wait p50", "wait_p50_s"), ("wait p99", "wait_p99_s"), ("run p50", "run_p50_s"),
            ("run p99", "run_p99_s"))


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms" if seconds < 0.1 else f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def _cell(key: str, value: Any) -> str:
    if key == "started_per_s":  # three significant figures: an hour's rate is often well under 1/s
        return f"{value:.2f}" if value >= 1 else f"{value:.3g}"
    if key.endswith("_s"):
        return _duration(value)
    return str(value)


def render(data: dict[str, Any]) -> str:
    """``data`` (from :func:`~meetingtasks.store.rollup.top_report`) as the terminal table: one block per
    window, one row per type."""
    stamp = time.strftime("%H:%M:%S", time.localtime(data["time"]))
    lines = [f"meetingtasks top  {stamp}  (slots of {data['slot_s']} s)"]
    for name in WINDOWS:
        window = data[name]
        types: dict[str, dict[str, Any]] = window["types"]
        width = max([len("type"), *(len(t) for t in types)])
        lines.append("")
        lines.append(f"last {name} ({window['span_s']:.0f} s)")
        lines.append(f"{'type':<{width}}  " + "  ".join(f"{title:>9}" for title, _ in _COLUMNS))
        if not types:
            lines.append("  (no task started or finished)")
        for task_type, figures in types.items():
            lines.append(f"{task_type:<{width}}  " + "  ".join(f"{_cell(key, figures[key]):>9}" for _, key in _COLUMNS))
    return "\n".join(lines)


@click.command()
@click.option("--once", is_flag=True, help="Print once and exit (default: refresh until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object (with --once) or one line per refresh.")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@platform_command
def top(platform: Platform, once: bool, as_json: bool, interval_s: float) -> None:
    """Per task type over the last minute and hour: started/s, succeeded, failed, dead-lettered, retries, queue
    wait and run time p50/p99."""
    reader = reader_for(platform)
    if once:
        data = top_report(platform, reader=reader)
        if as_json:
            echo_json(data)
        else:
            click.echo(render(data))
        return
    try:
        while True:
            data = top_report(platform, reader=reader)
            if as_json:
                click.echo(json.dumps(data, sort_keys=True))
            else:
                click.echo(_CLEAR + render(data))
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return


def register(group: click.Group) -> None:
    group.add_command(top)
