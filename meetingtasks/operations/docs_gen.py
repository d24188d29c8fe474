"""Generated parts of the docs: the settings reference, the Redis key table and the task states.

They come from the code (the ``Settings`` fields with their descriptions, ``keys.KEY_SCHEMA``,
``status_schema``), so the docs cannot say something the code does not. Each table sits in its page between
``<!-- generated: NAME -->`` and ``<!-- end generated -->``; everything outside the markers is hand-written and
left alone.

    python -m meetingtasks.operations.docs_gen          # rewrite the tables in docs/
    python -m meetingtasks.operations.docs_gen --check  # exit 1 naming each page whose table is out of date

tests/test_docs_drift.py runs the check.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import meetingtasks.core.settings as settings_module
from meetingtasks.core import applications
from meetingtasks.core.app_settings import AppSettings
from meetingtasks.core.settings import ENV_PREFIX, Settings
from meetingtasks.store.keys import KEY_SCHEMA
from meetingtasks.store.status_schema import PHASES, Status

#: The repository's docs directory (the package sits next to it in a source checkout).
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
END_MARKER = "<!-- end generated -->"
#: The settings module's section comments (``# --- Redis ---``) name the groups of the settings table.
_SECTION = re.compile(r"^\s*# --- (?P<title>[^-].*?) -+\s*$")
_FIELD = re.compile(r"^\s{4}(?P<name>[a-z_][a-z0-9_]*):")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _default(name: str, info: FieldInfo) -> str:
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not name.endswith("_port"):
        return f"{value:,}"
    if isinstance(value, int | float):
        return f"{value:g}"
    if isinstance(value, list | dict) and not value:
        return "empty"
    return f"`{value}`"


def _sections() -> list[tuple[str, list[str]]]:
    """(section title, field names) in the order ``settings.py`` declares them."""
    source = Path(settings_module.__file__ or "").read_text(encoding="utf-8")
    body = source[source.index("class Settings(BaseSettings):"):]
    sections: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("    # --- derived values"):
            break
        section = _SECTION.match(line)
        if section:
            sections.append((section.group("title").strip(), []))
            continue
        field = _FIELD.match(line)
        if field and field.group("name") in Settings.model_fields and sections:
            sections[-1][1].append(field.group("name"))
    return sections


def render_settings() -> str:
    """The settings reference: one table per section of ``Settings``, every field with its env var."""
    fields = Settings.model_fields
    listed: set[str] = set()
    parts: list[str] = []
    for title, names in _sections():
        parts.append(f"### {title[0].upper()}{title[1:]}\n")
        parts.append("| env var | default | meaning |")
        parts.append("|---|---|---|")
        for name in names:
            info = fields[name]
            listed.add(name)
            parts.append(
                f"| `{ENV_PREFIX}{name.upper()}` | {_cell(_default(name, info))} | {_cell(info.description or '')} |"
            )
        parts.append("")
    missing = sorted(set(fields) - listed)
    if missing:
        raise RuntimeError(f"settings outside any '# --- section ---' of Settings: {', '.join(missing)}")
    parts += _app_sections()
    return "\n".join(parts).rstrip("\n")


def _app_sections() -> list[str]:
    """One table per settings section of the built-in applications (:mod:`meetingtasks.core.app_settings`)."""
    applications.load_builtin()
    parts: list[str] = []
    for cls in AppSettings.__subclasses__():
        if not cls.__module__.startswith("meetingtasks."):
            continue  # an application of a test or a user that happens to be imported
        summary = (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")
        parts.append(f"### {summary} (`{cls.__module__}.{cls.__name__}`, YAML section `{cls.yaml_section}`)\n")
        parts.append("| env var | default | meaning |")
        parts.append("|---|---|---|")
        for name, info in cls.model_fields.items():
            parts.append(
                f"| `{ENV_PREFIX}{name.upper()}` | {_cell(_default(name, info))} | {_cell(info.description or '')} |"
            )
        parts.append("")
    return parts


def render_keys() -> str:
    """The Redis key table, from ``keys.KEY_SCHEMA``."""
    rows = ["| key | type | owner | lifetime / notes |", "|---|---|---|---|"]
    rows += [f"| `{_cell(s.pattern)}` | {s.type} | {_cell(s.owner)} | {_cell(s.notes)} |" for s in KEY_SCHEMA]
    return "\n".join(rows)


def render_statuses() -> str:
    """The task states, in order, with their phase and whether they are final, from ``status_schema``."""
    rows = ["| state | phase | final |", "|---|---|---|"]
    rows += [f"| `{s.value}` | {PHASES[s].value} | {'yes' if s.is_terminal else 'no'} |" for s in Status]
    return "\n".join(rows)


#: (page in docs/, marker name, renderer)
GENERATED: tuple[tuple[str, str, Callable[[], str]], ...] = (
    ("configuration.md", "settings", render_settings),
    ("redis-keys.md", "redis-keys", render_keys),
    ("architecture.md", "statuses", render_statuses),
)


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the block between the markers of ``name`` replaced by ``content``."""
    start = f"<!-- generated: {name} -->"
    i = text.find(start)
    j = text.find(END_MARKER, i)
    if i < 0 or j < 0:
        raise ValueError(f"no '{start}' ... '{END_MARKER}' block")
    return f"{text[:i]}{start}\n{content}\n{text[j:]}"


def stale_pages(docs_dir: Path = DOCS_DIR) -> list[str]:
    """The pages whose generated block differs from what the code renders now."""
    stale = []
    for page, name, render in GENERATED:
        text = (docs_dir / page).read_text(encoding="utf-8")
        if replace_block(text, name, render()) != text:
            stale.append(page)
    return stale


def write(docs_dir: Path = DOCS_DIR) -> list[str]:
    """Rewrite every generated block; the pages that changed."""
    changed = []
    for page, name, render in GENERATED:
        path = docs_dir / page
        text = path.read_text(encoding="utf-8")
        new = replace_block(text, name, render())
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meetingtasks.operations.docs_gen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report pages that are out of date")
    parser.add_argument("--docs-dir", type=Path, default=DOCS_DIR)
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs_dir)
        for page in stale:
            print(f"docs/{page} is out of date: run python -m meetingtasks.operations.docs_gen", file=sys.stderr)
        return 1 if stale else 0
    for page in write(args.docs_dir):
        print(f"rewrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
