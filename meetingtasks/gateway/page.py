"""The gateway's page at ``/``: ``static/index.html`` with what it needs of the status record (the states, the
terminal ones, each state's phase, from :func:`meetingtasks.store.status_schema.page_definitions`) put into it when the
gateway starts. The page holds no copy of them: its script reads the injected JSON, and its styles colour a status
by its phase."""

from __future__ import annotations

import json
from importlib import resources

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.store.status_schema import page_definitions

#: Where the page takes the definitions: the content of its ``<script id="status-schema" type="application/json">``.
MARKER = "{{ status_schema.page_definitions() }}"


def render(template: str | None = None) -> str:
    """The page as served: ``template`` (by default ``static/index.html``) with :data:`MARKER` replaced."""
    if template is None:
        template = resources.files("meetingtasks.gateway").joinpath("static/index.html").read_text("utf-8")
    if template.count(MARKER) != 1:
        raise ConfigurationError(f"the gateway page must hold {MARKER} once, where the status definitions go")
    # "<" escaped: the JSON sits inside a <script> element, which a "</script>" in it would end.
    definitions = json.dumps(page_definitions(), separators=(",", ":")).replace("<", "\\u003c")
    return template.replace(MARKER, definitions)
