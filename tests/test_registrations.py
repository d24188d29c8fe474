"""Services, channels and settings sections are registrations: the meeting system is declared like any
application, a name that cannot be a key is refused in one line, and tools learn recorded services."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from pydantic import BaseModel

from meetingtasks import ConfigurationError, channel, task_type
from meetingtasks.core.errors import UnknownChannel
from meetingtasks.core.registry import REGISTRY, SERVICE_TABLE, declare_service, known_services, services
from meetingtasks.core.settings import Settings, load_settings
from meetingtasks.events import CHANNELS, OWNERS
from meetingtasks.events.channels import CHANNEL_TABLE, ChannelSpec, check_event_type
from meetingtasks.metrics.collector import PlatformCollector
from meetingtasks.operations.flower import create_flower_app
from meetingtasks.services import SERVICES as MEETING_SERVICES
from meetingtasks.services import TASK_TYPES as MEETING_TASK_TYPES
from meetingtasks.services.settings import MeetingSettings, meeting_settings
from meetingtasks.store.platform import Platform
from meetingtasks.store.stats import collect
from tests.support.processes import ROOT


class Note(BaseModel):
    text: str


def test_the_meeting_system_is_declared_through_the_same_calls_as_any_application() -> None:
    specs = CHANNEL_TABLE.specs()
    assert specs["meeting_events"] == ChannelSpec(
        "meeting_events",
        ("meeting.created", "meeting.started", "meeting.ended", "meeting.user_joined", "meeting.user_left"),
        "meeting",
    )
    assert {name: OWNERS[name] for name in ("user_events", "ai_events")} == {"user_events": "user", "ai_events": "ai"}
    assert services()[:5] == MEETING_SERVICES
    assert SERVICE_TABLE.get("ai").tasks_module == "meetingtasks.services.ai.tasks"  # type: ignore[union-attr]


def test_a_channel_of_your_own_is_checked_like_the_built_in_ones() -> None:
    # given a channel declared with the public call
    spec = channel("t_reg_orders", ["order.placed", "order.shipped"], owner="t_reg_shop")
    # then publishing and subscriptions know it, its owner is a service, and declaring it again is harmless
    assert CHANNELS["t_reg_orders"] == ("order.placed", "order.shipped") and OWNERS["t_reg_orders"] == "t_reg_shop"
    assert check_event_type("t_reg_orders", "order.placed") == "order.placed"
    assert "t_reg_shop" in services()
    assert channel("t_reg_orders", ("order.placed", "order.shipped"), owner="t_reg_shop") == spec
    with pytest.raises(UnknownChannel, match="unknown event channel 't_reg_order' \\(did you mean 't_reg_orders'"):
        check_event_type("t_reg_order", "order.placed")


@pytest.mark.parametrize(("args", "message"), [
    (("Orders", ["a.b"], "shop"), "event channel name 'Orders' is not allowed"),
    (("t_reg:x", ["a.b"], "shop"), "event channel name 't_reg:x' is not allowed"),
    (("t_reg_x", "a.b", "shop"), "event_types must be a list of names, not the string 'a.b'"),
    (("t_reg_x", [], "shop"), "at least one (bad: none given)"),
    (("t_reg_x", ["a b"], "shop"), "(bad: ['a b'])"),
    (("t_reg_x", ["a.b", "a.b"], "shop"), "an event type is listed twice"),
    (("t_reg_x", ["a.b"], "Shop Co"), "owner: service name 'Shop Co' is not allowed"),
    (("t_reg_orders", ["order.placed"], "t_reg_shop"), "is declared twice, differently"),
])
def test_a_bad_channel_declaration_is_one_line(args: tuple[str, list[str], str], message: str) -> None:
    channel("t_reg_orders", ["order.placed", "order.shipped"], owner="t_reg_shop")
    name, types, owner = args
    with pytest.raises(ConfigurationError) as caught:
        channel(name, types, owner=owner)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "t_reg_x" not in CHANNEL_TABLE.specs()


@pytest.mark.parametrize("service", ["", "Billing", "bill.ing", "bill:ing", "{billing}", "bill ing", "9lives",
                                     "x" * 41])
def test_a_task_type_on_a_service_name_that_cannot_be_a_key_is_refused(service: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        task_type(service, "t_reg_bad", payload=Note)(lambda p: None)
    assert str(caught.value).startswith(f"task type 't_reg_bad': service name {service!r} is not allowed")
    assert service not in services()


def test_the_meeting_systems_declared_task_types_are_what_its_task_modules_register() -> None:
    # (the index that refuses an application's type named like a built-in one without importing every module)
    REGISTRY.all()
    for service in MEETING_SERVICES:
        module = SERVICE_TABLE.get(service).tasks_module  # type: ignore[union-attr]
        registered = tuple(spec.name for spec in REGISTRY.all() if spec.handler.__module__ == module)
        assert registered == MEETING_TASK_TYPES[service] == SERVICE_TABLE.get(service).types  # type: ignore[union-attr]


def test_a_type_of_a_task_module_missing_from_its_services_declared_types_is_refused() -> None:
    declare_service("t-reg-indexed", tasks=__name__, types=["t_reg_listed"])
    task_type("t-reg-indexed", "t_reg_listed", payload=Note)(lambda p: None)
    with pytest.raises(ConfigurationError, match=r"'t_reg_unlisted' of tests\.test_registrations is not among"):
        task_type("t-reg-indexed", "t_reg_unlisted", payload=Note)(lambda p: None)
    with pytest.raises(ConfigurationError, match="task type name 'a b' is not allowed"):
        declare_service("t-reg-indexed2", tasks=__name__, types=["a b"])


TAKEOVER = """
from pydantic import BaseModel
from meetingtasks import task_type
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.registry import declare_service
declare_service("t-reg-lazy", tasks="t_reg_lazy_tasks")  # no types declared: its module is imported to check

class Invoice(BaseModel):
    invoice_id: str = "i-1"

try:
    @task_type("t-reg-other", "t_reg_lazy_type", payload=Invoice)
    def handler(p: Invoice) -> dict:
        return {}
    print("accepted")
except ConfigurationError as exc:
    print("refused:", exc)
try:
    declare_service("ai", tasks="elsewhere.tasks")
    print("accepted")
except ConfigurationError as exc:
    print("refused:", exc)
"""


def test_a_type_or_service_declared_like_a_lazily_loaded_one_is_refused_at_the_call(tmp_path: Path) -> None:
    # Given a service declared with a task module not imported yet, and no declared types
    (tmp_path / "t_reg_lazy_tasks.py").write_text(
        "from pydantic import BaseModel\nfrom meetingtasks import task_type\n"
        "class P(BaseModel):\n    x: int = 0\n"
        "@task_type('t-reg-lazy', 't_reg_lazy_type', payload=P)\ndef lazy(p: P) -> None:\n    return None\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETINGTASKS_DATA_DIR": str(tmp_path),
           "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    # When another module registers a type of the same name, and declares the built-in service "ai" otherwise
    out = subprocess.run([sys.executable, "-c", TAKEOVER], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    # Then both are refused there, in one line each
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused: task type 't_reg_lazy_type' is registered twice"), lines
    assert lines[1].startswith("refused: service 'ai' is declared twice"), lines


def test_any_safe_service_name_gets_its_task_types() -> None:
    task_type("t-reg_billing2", "t_reg_note", payload=Note)(lambda p: p.text)
    assert "t-reg_billing2" in services()


def test_services_recorded_in_redis_are_known_to_a_process_without_their_code(platform: Platform,
                                                                              r: redis.Redis) -> None:
    # given workers of services this process never imported recorded themselves (and garbage was written)
    r.sadd(platform.keys.services, "ledger", "ai", "Bad.Name", b"\xff")
    # then the platform lists them after the registered ones, each once, and ignores what is not a name
    known = platform.services()
    assert known[:5] == MEETING_SERVICES and "ledger" in known
    assert known.count("ai") == 1 and "Bad.Name" not in known
    assert known_services([b"zeta", b"alpha"])[-2:] == ("alpha", "zeta")
    assert platform.dead_letters.services_on(r) == known
    # and stats and the exporter count its queues
    r.lpush("ledger.high", b"x")
    assert [(row.priority, row.queued) for row in collect(platform) if row.service == "ledger"] == [
        ("critical", 0), ("high", 1), ("normal", 0), ("low", 0)]
    depth = next(f for f in PlatformCollector(platform).collect() if f.name == "meetingtasks_queue_depth")
    assert any(s.labels.get("service") == "ledger" and s.value == 1 for s in depth.samples)
    # and Flower's app listens on the recorded service's four queues
    flower = create_flower_app(platform.settings.model_copy(update={"flower_allow_no_auth": True}))
    assert {q.name for q in flower.conf.task_queues} >= {f"ledger.{p}" for p in ("critical", "high", "normal", "low")}
    # and a service nobody knows is one line
    with pytest.raises(ConfigurationError, match="unknown service 'ledgr'; services: user, meeting"):
        platform.check_service("ledgr")


def test_dlq_refuses_an_unknown_service_in_one_line(env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "dlq", "list", "--service", "nope"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: unknown service 'nope'; services: user, meeting, media, signaling, ai"
    ]


def test_the_meeting_settings_are_their_own_section_with_the_same_env_names(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # given the public env var names and a YAML file with a meeting section and a flat key
    monkeypatch.setenv("MEETINGTASKS_MEETING_MAX_PARTICIPANTS", "7")
    config = tmp_path / "config.yaml"
    config.write_text("meeting:\n  login_session_ttl_s: 600\nop_ttl_s: 120\ntask_dispatcher:\n  dedup_ttl: 9\n")
    monkeypatch.setenv("MEETINGTASKS_CONFIG", str(config))
    # then the meeting section reads them, the platform's Settings keeps only its own and warns of nothing
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    meeting = MeetingSettings.load()
    assert (meeting.meeting_max_participants, meeting.login_session_ttl_s, meeting.op_ttl_s) == (7, 600, 120)
    assert settings.dedup_ttl_s == 9 and "meeting_max_participants" not in Settings.model_fields
    assert caplog.records == []
    # and a platform builds its section once; a test or an embedder may hand it one
    platform = Platform(settings)
    assert meeting_settings(platform) is meeting_settings(platform)
    platform.use_section(MeetingSettings(meeting_max_participants=3))
    assert meeting_settings(platform).meeting_max_participants == 3


def test_a_bad_meeting_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETINGTASKS_SIGNALING_SWEEP_INTERVAL_S", "-1")
    with pytest.raises(ConfigurationError) as caught:
        MeetingSettings.load()
    assert str(caught.value) == ("MEETINGTASKS_SIGNALING_SWEEP_INTERVAL_S: Input should be greater than 0 "
                                 "(got '-1')")
