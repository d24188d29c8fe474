"""``dispatch``, ``status``, ``cancel`` and ``stats``."""

from __future__ import annotations

import json
import time

import click

from meetingtasks.cli.main import echo_json, fail, platform_command
from meetingtasks.core.errors import TaskFailed, WaitTimeout
from meetingtasks.core.priority import Priority
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.events.retention import stream_states
from meetingtasks.store.platform import Platform
from meetingtasks.store.stats import collect


@click.command()
@click.argument("task_type")
@click.option("--payload", "payload_json", required=True, help="The payload as a JSON object.")
@click.option("--priority", type=click.Choice([p.value for p in Priority], case_sensitive=False))
@click.option("--delay", type=click.FloatRange(min=0), help="Seconds to wait before queuing.")
@click.option("--wait", is_flag=True, help="Wait for the task to finish and print its result.")
@click.option("--timeout", "wait_s", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds --wait waits.")
@platform_command
def dispatch(platform: Platform, task_type: str, payload_json: str, priority: str | None, delay: float | None,
             wait: bool, wait_s: float) -> None:
    """Queue a task of TASK_TYPE and print its id."""
    try:
        payload = json.loads(payload_json)
    except json.JSONDecodeError as exc:
        fail(f"--payload is not valid JSON: {exc}", code=2)
    handle = Dispatcher(platform).dispatch(task_type, payload, priority=priority, delay=delay)
    click.echo(handle.id)
    if wait:
        try:
            result = handle.wait(timeout=wait_s)
        except (TaskFailed, WaitTimeout) as exc:
            fail(str(exc))
        echo_json(result)


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@platform_command
def status(platform: Platform, task_id: str, as_json: bool) -> None:
    """Show the status of a task."""
    record = Dispatcher(platform).record(task_id)
    if as_json:
        echo_json(record.to_dict())
        return
    data = record.to_dict()
    click.echo(f"{task_id}  {data['status']}  type={data.get('type')}  attempt={data['attempt']}")
    for step in data["history"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(step["time"])) + f".{int(step['time'] % 1 * 1000):03d}"
        click.echo(f"  {stamp}  {step['status']:<14} attempt {step['attempt']}")
    if record.error:
        click.echo(f"  error: {record.error}")
    if "result" in data:
        click.echo(f"  result: {json.dumps(data['result'])}")


@click.command()
@click.argument("task_id")
@click.option("--terminate", is_flag=True, help="Also kill a running task's worker process (prefork pool).")
@platform_command
def cancel(platform: Platform, task_id: str, terminate: bool) -> None:
    """Cancel a scheduled, queued or running task.

    Exit 0 when it is cancelled (now or before), or is running with its cancel flag set (it stops at its
    next cancel check). Exit 1 when it had already finished otherwise (nothing changes), could not be
    terminated, or the id is unknown.
    """
    from meetingtasks.store.cancel import cancel as cancel_one

    outcome = cancel_one(platform, task_id, terminate=terminate)
    if not outcome.ok:
        fail(outcome.describe())
    click.echo(outcome.describe())


@click.command()
@click.option("--json", "as_json", is_flag=True)
@platform_command
def stats(platform: Platform, as_json: bool) -> None:
    """Per service and priority: queued, unacked, scheduled, dead-lettered; per event stream: length and cap.

    A stream over its cap (``stream_maxlen``) gets a warning line on stderr, with ``--json`` too (whose
    stdout stays the list of queue rows)."""
    rows = collect(platform)
    streams = stream_states(platform)
    if as_json:
        echo_json([r.to_dict() for r in rows])
    else:
        click.echo(f"{'service':<10} {'priority':<9} {'queued':>8} {'unacked':>8} {'scheduled':>10} {'dead':>6}")
        for r in rows:
            click.echo(f"{r.service:<10} {r.priority:<9} {r.queued:>8} {r.unacked:>8} {r.scheduled:>10} "
                       f"{r.dead_lettered:>6}")
        click.echo(f"\n{'stream':<18} {'length':>9} {'cap':>9} {'pending':>8}")
        for s in streams:
            flag = "  OVER CAP" if s.over_cap else ""
            click.echo(f"{s.channel:<18} {s.length:>9} {s.cap:>9} {sum(g.pending for g in s.groups):>8}{flag}")
    for s in streams:
        if s.over_cap:
            click.echo(f"warning: {s.warning(platform.keys.bridge_group)}", err=True)


def register(group: click.Group) -> None:
    for command in (dispatch, status, cancel, stats):
        group.add_command(command)
