"""The status record's one definition (meetingtasks.store.status_schema) and the places that classify states by it."""

from __future__ import annotations

from meetingtasks.metrics import tasks
from meetingtasks.store import rollup
from meetingtasks.store.status_schema import ENDED, PHASES, TERMINAL_NAMES, Phase, Status, phase_of


def test_every_state_has_a_phase_and_the_final_states_are_the_ending_phases() -> None:
    assert set(PHASES) == set(Status)
    assert {s.value for s, phase in PHASES.items() if phase in ENDED} == TERMINAL_NAMES
    assert all(Status(name).is_terminal for name in TERMINAL_NAMES)


def test_phase_of_names_a_states_phase_and_nothing_for_another_name() -> None:
    assert phase_of("DEAD_LETTERED") == "failed" and phase_of("QUEUED") == "waiting"
    assert phase_of("sent") == "" and phase_of("") == ""


def test_every_state_of_a_run_is_counted_by_the_metrics() -> None:
    of_a_run = {s.value for s in Status if PHASES[s] is not Phase.WAITING}
    assert set(rollup.COUNTED) == of_a_run  # top's per-type counts
    assert set(tasks.STATUS_COUNTERS) == of_a_run  # the Prometheus counters
