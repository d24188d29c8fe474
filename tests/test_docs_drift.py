"""The docs say what the code says: the generated tables match the code, and the README's links resolve.

The settings reference (docs/configuration.md) and the Redis key table (docs/redis-keys.md) are rendered from
``Settings`` and ``keys.KEY_SCHEMA`` by ``python -m meetingtasks.operations.docs_gen``; a field or key added without
regenerating fails here, naming the page and the command that fixes it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from meetingtasks.core.settings import ENV_PREFIX, Settings
from meetingtasks.operations.docs_gen import (
    DOCS_DIR,
    GENERATED,
    render_keys,
    render_settings,
    replace_block,
    stale_pages,
)
from meetingtasks.store import keys

ROOT = DOCS_DIR.parent
LINK = re.compile(r"\]\(((?:\./)?docs/[^)#\s]+)(?:#[^)]*)?\)")


def test_generated_tables_match_the_code() -> None:
    stale = stale_pages()
    assert stale == [], f"out of date: {stale}; run python -m meetingtasks.operations.docs_gen"


def test_the_check_command_reports_a_stale_page(tmp_path: Path) -> None:
    for page, _name, _render in GENERATED:
        (tmp_path / page).write_text((DOCS_DIR / page).read_text(encoding="utf-8"), encoding="utf-8")
    check = [sys.executable, "-m", "meetingtasks.operations.docs_gen", "--check", "--docs-dir", str(tmp_path)]
    assert subprocess.run(check, capture_output=True, text=True, cwd=ROOT).returncode == 0

    page = tmp_path / "configuration.md"
    page.write_text(page.read_text(encoding="utf-8").replace("MEETINGTASKS_VISIBILITY_TIMEOUT_S", "X"), "utf-8")
    stale = subprocess.run(check, capture_output=True, text=True, cwd=ROOT)
    assert stale.returncode == 1
    expected = "docs/configuration.md is out of date: run python -m meetingtasks.operations.docs_gen"
    assert stale.stderr.strip() == expected


def test_every_setting_has_a_description_and_a_row() -> None:
    table = render_settings()
    for name, info in Settings.model_fields.items():
        assert info.description, f"Settings.{name} has no description"
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in table


def test_the_key_table_holds_every_schema_entry_and_the_status_fields() -> None:
    table = render_keys()
    assert len(table.splitlines()) == len(keys.KEY_SCHEMA) + 2
    status = next(spec for spec in keys.KEY_SCHEMA if spec.pattern == "P status:<id>")
    assert "deliveries" in status.notes and "cancel_requested_at" in status.notes
    assert "deliveries:" not in " ".join(spec.pattern for spec in keys.KEY_SCHEMA)
    # The module docstring carries the same schema.
    assert all(spec.pattern in (keys.__doc__ or "") for spec in keys.KEY_SCHEMA)


def test_replace_block_keeps_the_hand_written_text() -> None:
    text = "intro\n<!-- generated: x -->\nold\n<!-- end generated -->\noutro\n"
    assert replace_block(text, "x", "new") == "intro\n<!-- generated: x -->\nnew\n<!-- end generated -->\noutro\n"


def test_readme_links_to_docs_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = LINK.findall(readme)
    assert targets, "the README links to no docs/ page"
    missing = [target for target in targets if not (ROOT / target).is_file()]
    assert missing == []


def test_docs_links_between_pages_resolve() -> None:
    missing = []
    for page in DOCS_DIR.glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s:]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).is_file():
                missing.append(f"{page.name} -> {target}")
    assert missing == []


def _key_methods() -> dict[str, str]:
    """Every key ``Keys`` spells, with ``P `` as the prefix and ``x`` for each argument."""
    spelled = keys.Keys(prefix="P ")
    out = {}
    for name in dir(keys.Keys):
        if name.startswith("_") or name in ("prefix", "beat_prefix"):
            continue
        value = getattr(spelled, name)
        if callable(value):
            argc = value.__code__.co_argcount - 1
            value = value(*["x"] * argc)
        out[name] = value
    return out


def _concrete(spec: keys.KeySpec) -> str:
    """The key a schema pattern names with ``x`` for each placeholder (as :func:`_key_methods` spells it)."""
    return re.sub(r"<[^>]+>", "x", spec.pattern)


def test_the_key_schema_and_the_keys_class_agree() -> None:
    # Spelled elsewhere: the queue names (meetingtasks.core.priority) and redbeat's keys under Keys.beat_prefix.
    listed = {_concrete(spec) for spec in keys.KEY_SCHEMA
              if spec.pattern != "<svc>.<priority>" and not spec.pattern.startswith("P beat:")}
    spelled = _key_methods()
    unlisted = sorted(name for name, key in spelled.items() if key not in listed)
    assert unlisted == [], f"Keys methods whose key has no KEY_SCHEMA entry: {unlisted}"
    unused = sorted(listed - set(spelled.values()))
    assert unused == [], f"KEY_SCHEMA entries no Keys method spells: {unused}"
