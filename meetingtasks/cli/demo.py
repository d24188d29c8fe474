"""``demo``: the meeting scenario end to end against a running platform (``meetingtasks up``)."""

from __future__ import annotations

import click

from meetingtasks.cli.main import fail, platform_command
from meetingtasks.store.platform import Platform


@click.command()
@click.option("--gateway", "gateway_url", metavar="URL",
              help="The gateway's WebSocket URL [default: ws://<gateway_host>:<gateway_port>/ws from the settings, "
                   "where `meetingtasks up` runs it].")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds each step may take.")
@click.option("--clip", "clip_name", default="greeting.wav", show_default=True,
              help="Which shipped spoken clip alice submits (see meetingtasks/services/ai/data/clips.json).")
@platform_command
def demo(platform: Platform, gateway_url: str | None, timeout_s: float, clip_name: str) -> None:
    """Three users register, log in, meet over the WebSocket gateway; a spoken clip is transcribed and its
    transcript and emotion pushed to every client; the meeting ends and its recording stops. Prints a
    timeline with latencies; exits 0 only if every step happened."""
    from meetingtasks.operations.demo import DemoFailed, run_demo
    from meetingtasks.services.ai.clips import clips

    if clip_name not in {c.name for c in clips()}:
        fail(f"--clip {clip_name}: not a shipped clip ({', '.join(c.name for c in clips())})", code=2)
    settings = platform.settings
    url = gateway_url or f"ws://{settings.gateway_host}:{settings.gateway_port}/ws"
    try:
        summary = run_demo(platform, url, timeout_s=timeout_s, clip_name=clip_name, echo=click.echo)
    except DemoFailed as exc:
        fail(f"demo failed: {exc}")
        return
    click.echo(f"demo: every step happened in {summary['duration_s']:.1f} s: meeting {summary['meeting_id']}, "
               f"transcript {summary['transcript']!r}, emotion {summary['emotion']}, {summary['pushes']} results "
               f"pushed to 3 clients, {summary['events']} meeting events seen")


def register(group: click.Group) -> None:
    group.add_command(demo)
