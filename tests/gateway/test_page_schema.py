"""The gateway page's knowledge of the status record comes from :mod:`meetingtasks.store.status_schema`: the served page
carries its states, terminal set and phases, and the page's own file holds no copy of them."""

from __future__ import annotations

import json
import re
import urllib.request
from importlib import resources

import pytest

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.gateway import page
from meetingtasks.store.status_schema import ENDED, PHASES, TERMINAL_NAMES, Status, page_definitions
from tests.gateway.conftest import GatewayProcess

_INJECTED = re.compile(r'<script id="status-schema" type="application/json">(.*?)</script>', re.S)


def _template() -> str:
    return resources.files("meetingtasks.gateway").joinpath("static/index.html").read_text("utf-8")


def test_the_served_page_carries_the_status_schemas_terminal_set(gateway: GatewayProcess) -> None:
    with urllib.request.urlopen(gateway.url + "/", timeout=10) as response:
        html = response.read().decode()
    found = _INJECTED.search(html)
    assert found is not None, "the page has no status-schema element"
    served = json.loads(found.group(1))
    assert set(served["terminal"]) == TERMINAL_NAMES
    assert served["statuses"] == [s.value for s in Status]
    assert served["phases"] == {s.value: PHASES[s].value for s in Status}
    assert served == page_definitions()


def test_the_page_file_holds_no_copy_of_the_states() -> None:
    template = _template()
    for status in Status:
        assert status.value not in template, f"index.html names {status.value}: read it from STATUS_SCHEMA instead"


def test_the_page_colours_every_ending_phase() -> None:
    style = _template().split("<style>", 1)[1].split("</style>", 1)[0]
    for phase in ENDED:
        assert re.search(rf"\.{phase.value}\b", style), f"index.html has no style for the phase {phase.value}"


def test_a_page_without_the_marker_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must hold"):
        page.render("<html>no definitions here</html>")
    rendered = page.render(f"<script>{page.MARKER}</script>")
    assert json.loads(rendered[len("<script>"):-len("</script>")]) == page_definitions()
