"""A worker's start-up imports only what a worker uses (see meetingtasks.core.optional_imports and
meetingtasks.worker.launch); what it leaves out still imports normally when something does use it.

Start-up time itself is measured by ``python -m bench`` (bench/startup.py), not here: timings on a shared machine
would make a flaky test.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from meetingtasks import dispatch
from meetingtasks.services import SERVICES
from meetingtasks.store.platform import Platform
from meetingtasks.worker import gc_tuning
from meetingtasks.worker.app import create_app
from meetingtasks.worker.gc_tuning import freeze_long_lived, starting_a_worker
from meetingtasks.worker.launch import run_worker
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

#: Packages a ready worker must not have imported, with what used to import them at start-up.
NOT_AT_START_UP = {
    "opentelemetry.sdk.metrics": "redis-py's probe for its optional metrics",
    "pygments": "celery.bin.base's lexer for `celery inspect` output",
    "celery.bin.celery": "Celery's umbrella command",
    "flower": "Celery's umbrella command, which loads every celery.commands plugin",
    "tornado": "Flower",
    "click_repl": "Celery's umbrella command (the amqp shell)",
    "prompt_toolkit": "click_repl",
    "numpy": "the ai service's audio models, needed only when a model runs",
    "scipy": "the ai service's audio models, needed only when a model runs",
}


#: Services whose modules import another service's package (and so its task types).
USES = {"meeting": ("user",), "media": ("user",), "signaling": ("user",)}


def _loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_a_ready_worker_has_imported_nothing_it_does_not_use(
    service: str, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    out = tmp_path / "modules.txt"
    start_worker(service, "--pool", "solo", "--include", "tests.support.startup_probe",
                 env_overrides={"STARTUP_PROBE_OUT": str(out)})
    text = wait_for(lambda: out.exists() and out.read_text(), message="the ready worker's list of modules")
    state, *names = str(text).splitlines()
    modules = set(names)
    # Start-up ran with automatic collections off; the ready worker has them on again, its start-up heap frozen.
    enabled, frozen = (field.split("=")[1] for field in state.split()[1:])
    assert enabled == "True" and int(frozen) > 100_000
    # The list came from the real start-up path (Celery's worker command run by ours).
    assert {"meetingtasks.worker.launch", "celery.bin.worker", "celery.worker.consumer"} <= modules
    assert {package: why for package, why in NOT_AT_START_UP.items() if _loaded(modules, package)} == {}
    # Its own service's task types (and the user service's, whose store the meeting, media and signaling stores
    # read), not the others' (they load when a lookup first misses).
    services = {svc for svc in SERVICES if f"meetingtasks.services.{svc}.tasks" in modules}
    assert services == {service, *USES.get(service, ())}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_what_start_up_skips_still_imports_when_it_is_used() -> None:
    done = _python(
        "import sys, meetingtasks\n"
        "assert 'opentelemetry.sdk.metrics' not in sys.modules\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from redis.observability.config import OTelConfig\n"
        "from redis.observability.providers import get_observability_instance\n"
        "get_observability_instance().init(OTelConfig())\n"  # redis-py's own metrics set-up still works
        "import pygments.lexers\n"
        "print('ok')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok"]


def test_a_skipped_module_is_absent_inside_the_block_only() -> None:
    done = _python(
        "import sys\n"
        "from meetingtasks.core.optional_imports import skipped\n"
        "assert 'colorsys' not in sys.modules\n"
        "with skipped('colorsys', 'json'):\n"
        "    import json\n"  # imported already: the block changes nothing for it
        "    try:\n"
        "        import colorsys\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print('absent', exc.name)\n"
        "import colorsys\n"
        "print('present', colorsys.__name__)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["absent colorsys", "present colorsys"]


def test_the_first_freeze_of_a_worker_skips_the_full_collection_and_later_ones_collect(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gc_tuning, "_frozen", False)  # as in a new worker process
    collections: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.unfreeze()
    was_enabled = gc.isenabled()
    gc.disable()  # only explicit collections are recorded
    gc.callbacks.append(record)
    try:
        freeze_long_lived()  # worker_init: the start-up heap is frozen as it is
        assert collections == []
        assert gc.get_freeze_count() > 0
        freeze_long_lived()  # worker_ready, worker_process_init: collect what is younger, then freeze
        assert collections == [2]
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize(("argv", "worker"), [
    (["python", "-m", "meetingtasks", "worker", "ai"], True),
    (["python", "-X", "importtime", "-u", "-m", "meetingtasks.cli", "worker", "ai"], True),
    (["/usr/bin/python3", "/usr/local/bin/meetingtasks", "worker", "ai", "--pool", "solo"], True),
    (["python", "-m", "meetingtasks", "up"], False),
    (["/usr/local/bin/meetingtasks", "dispatch", "worker"], False),
    (["python", "-m", "celery", "-A", "meetingtasks.services.ai", "worker"], False),
    (["python", "-c", "import meetingtasks", "worker"], False),
    (["python", "app.py", "worker"], False),
    (["python", "-m", "pytest", "worker"], False),
    (["python"], False),
])
def test_only_a_worker_command_keeps_collections_off_after_the_import(argv: list[str], worker: bool) -> None:
    assert starting_a_worker(argv) is worker


def test_importing_the_package_leaves_the_collector_as_it_was() -> None:
    done = _python(
        "import gc\n"
        "gc.disable()\n"
        "import meetingtasks.worker.app\n"
        "print(gc.isenabled())\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    done = _python("import gc, meetingtasks.worker.app; print(gc.isenabled())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_a_worker_that_stops_before_its_first_freeze_gives_the_collector_back() -> None:
    app = create_app("ai")
    assert gc.isenabled()
    with pytest.raises(click.UsageError):
        run_worker(app, ["--no-such-option"])
    assert gc.isenabled()


def test_a_worker_finds_the_other_services_types_when_it_first_looks_them_up() -> None:
    done = _python(
        "import sys\n"
        "from meetingtasks.worker.app import create_app\n"
        "from meetingtasks.core.registry import REGISTRY\n"
        "create_app('ai')\n"
        "print('meetingtasks.services.media.tasks' in sys.modules)\n"
        "print(REGISTRY.find('media_stream_process').service)\n"
        "print(REGISTRY.get('user_login').service)\n"
        "print(len({s.service for s in REGISTRY.all()}))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "media", "user", "5"]


def test_threads_that_first_miss_at_once_all_find_the_type() -> None:
    done = _python(
        "import threading\n"
        "from meetingtasks.worker.app import create_app\n"
        "from meetingtasks.core.registry import REGISTRY\n"
        "create_app('ai')\n"
        "barrier, found = threading.Barrier(8), []\n"
        "def look():\n"
        "    barrier.wait()\n"
        "    found.append(REGISTRY.find('media_stream_process') is not None)\n"
        "threads = [threading.Thread(target=look) for _ in range(8)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "print(found.count(True))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8"]


@pytest.mark.slow
def test_celerys_global_environment_variables_do_not_replace_the_workers_app_or_broker(
    start_worker: Callable[..., WorkerProcess], platform: Platform
) -> None:
    # Celery's umbrella command read -A and -b from APP and BROKER_URL: common names in a container's environment.
    worker = start_worker("ai", "--pool", "solo",
                          env_overrides={"APP": "bench.stock_app", "BROKER_URL": "redis://127.0.0.1:1/0"})
    assert dispatch("t_echo", {"tag": "env"}).wait(timeout=20) == {"tag": "env"}
    assert ".> app:         meetingtasks.ai:" in worker.log()
