"""What every console handler shares: the platform, the guard, the audit log and the templates."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from meetingtasks.console.audit import AuditLog
from meetingtasks.console.auth import ANONYMOUS, CSRF_FIELD, Guard
from meetingtasks.store.platform import Platform
from meetingtasks.store.status_schema import phase_of

TEMPLATES = Path(__file__).parent / "templates"
#: Rows per page of every list.
PAGE_SIZE = 50
#: The latest time a filter may name (9999-12-31 23:59:59 UTC, the last one a page can print); the earliest is 0.
LATEST_TIME_S = 253_402_300_799
#: The highest page number asked for: far past any list (50 billion rows), and its offset still fits Redis's
#: 64-bit ranks.
MAX_PAGE = 1_000_000_000


def utc(time_s: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` UTC (what every page shows)."""
    if time_s is None:
        return "-"
    return dt.datetime.fromtimestamp(float(time_s), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def relative(time_s: float | None, now_s: float) -> str:
    """``in 5m`` / ``3s ago``."""
    if time_s is None:
        return ""
    delta = float(time_s) - now_s
    amount = abs(delta)
    text = (f"{amount:.0f}s" if amount < 120 else f"{amount / 60:.0f}m" if amount < 7200
            else f"{amount / 3600:.0f}h" if amount < 172_800 else f"{amount / 86_400:.0f}d")
    return f"in {text}" if delta > 0 else f"{text} ago"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def parse_time(text: str | None) -> float | None:
    """A filter's time: epoch seconds, or ISO 8601 (the browser's ``datetime-local``), taken as UTC. Raises
    ``ValueError`` naming the value when it is neither."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a time (epoch seconds or YYYY-MM-DDTHH:MM, UTC)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        value = moment.timestamp()
    # "1e400" parses (as inf), and so does "nan": neither is a time, nor one no page could print.
    if not math.isfinite(value) or not 0 <= value <= LATEST_TIME_S:
        raise ValueError(f"{text!r} is out of range (a time from 1970 to 9999, UTC)")
    return value


def parse_page(text: str | None) -> int:
    """A list's page number, 1 when not given; raises ``ValueError`` naming the value unless 1 to MAX_PAGE."""
    if not text:
        return 1
    try:
        page = int(text)
    except ValueError:
        raise ValueError(f"page {text!r} is not a whole number") from None
    if not 1 <= page <= MAX_PAGE:
        raise ValueError(f"page {text!r} is out of range (1 to {MAX_PAGE})")
    return page


def parse_cursor(text: str | None) -> str | None:
    """A dead-letter listing's cursor (``"<score ms> <id>"`` from the previous page), checked before it reaches
    Redis; raises ``ValueError`` unless the score is a whole number of milliseconds in range."""
    if not text:
        return None
    score, sep, letter_id = text.partition(" ")
    if not sep or not letter_id or not score.isdigit() or int(score) > LATEST_TIME_S * 1000:
        raise ValueError(f"cursor {text!r} is not one this console gave (reload the first page)")
    return text


@dataclass
class Console:
    platform: Platform
    guard: Guard
    audit: AuditLog
    flower_url: str

    def __post_init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
        # phase: a status's class, which the styles colour (meetingtasks.store.status_schema.PHASES).
        self.env.filters.update(utc=utc, pretty=pretty, phase=phase_of)
        self.env.globals.update(relative=relative, urlencode=urlencode)

    def services(self) -> tuple[str, ...]:
        """Every service the platform knows (asked each time: a worker may record a new one)."""
        return tuple(self.platform.service_clients())

    def check_service(self, service: str) -> str:
        """``service`` if the platform knows it; raises ``ValueError`` naming the known ones otherwise."""
        known = self.services()
        if service not in known:
            raise ValueError(f"unknown service {service!r} (known: {', '.join(known)})")
        return service

    @staticmethod
    def user(request: Request) -> str:
        return str(request.scope.get("user_name", ANONYMOUS))

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        user = self.user(request)
        html = self.env.get_template(template).render(
            request=request, user=user, csrf_field=CSRF_FIELD, csrf_token=self.guard.csrf_token(user),
            flower_url=self.flower_url, notice=request.query_params.get("notice"), **context)
        return HTMLResponse(html, status_code=status_code)

    def fragment(self, template: str, **context: Any) -> str:
        """A partial template's HTML, for the live updates."""
        return self.env.get_template(template).render(**context)
