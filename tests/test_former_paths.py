"""The module paths of earlier releases (before the package was grouped by layer) still import, as the very
modules that live at the new paths: users' payload models, application settings and deployments name them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from meetingtasks.core.former_paths import FORMER_PATHS

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> str:
    """``code`` in a new interpreter (this one has imported everything already); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_former_path_imports_as_the_module_it_became() -> None:
    # Given a process that imports each module of an earlier release by its former path, as user code does
    out = run_fresh(
        "import importlib, json, sys\n"
        "from meetingtasks.core.former_paths import FORMER_PATHS\n"
        "seen = {}\n"
        "for former, now in FORMER_PATHS.items():\n"
        "    module = importlib.import_module(former)\n"
        "    seen[former] = [module is sys.modules[now], module.__name__, module.__spec__.name]\n"
        "print(json.dumps(seen))\n"
    )
    seen = json.loads(out)
    # Then each is the same module object as the one at its new path, which keeps its own name and spec
    assert {former: (same, name, spec) for former, (same, name, spec) in seen.items()} == {
        former: (True, now, now) for former, now in FORMER_PATHS.items()
    }


def test_the_documented_imports_of_earlier_releases_still_work() -> None:
    # Given the imports earlier releases' docs gave applications (a payload's secret marker, an application's
    # settings section, a service declaration, the profiling and top APIs)
    out = run_fresh(
        "from typing import Annotated\n"
        "from pydantic import BaseModel\n"
        "import meetingtasks.secret_fields\n"
        "from meetingtasks.app_settings import AppSettings\n"
        "from meetingtasks.registry import declare_service\n"
        "from meetingtasks.profiling import Profiles\n"
        "from meetingtasks.metrics.rollups import top_report\n"
        "from meetingtasks.core import app_settings, registry, secret_fields\n"
        "class Card(BaseModel):\n"
        "    number: Annotated[str, meetingtasks.secret_fields.Secret]\n"
        "print(secret_fields.secret_fields(Card) == ('number',),\n"
        "      AppSettings is app_settings.AppSettings, declare_service is registry.declare_service)\n"
    )
    # Then they name the platform's own objects
    assert out.split() == ["True", "True", "True"]


def test_importing_the_package_imports_no_former_path_target() -> None:
    # Given a process that only imports the package (a dispatcher's start-up)
    out = run_fresh(
        "import json, sys, meetingtasks\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('meetingtasks.operations'))))\n"
    )
    # Then the aliases cost nothing until used: no operations module (Flower, the demo, up's parts) is loaded
    assert json.loads(out) == []


def test_every_former_path_points_at_a_module_of_the_tree() -> None:
    for former, now in FORMER_PATHS.items():
        path = ROOT / Path(*now.split("."))
        assert path.with_suffix(".py").is_file(), f"{former} -> {now}: no such module"
        assert not (ROOT / Path(*former.split("."))).with_suffix(".py").exists(), f"{former} is a module again"
