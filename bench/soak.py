"""The soak: many tasks across the five services and four priorities, with random failures and delays, and
events that trigger tasks through the bridge, while workers, the bridge and beat are SIGKILLed at random,
Redis is restarted, Redis refuses every write for a few seconds at a time (out of memory, then a read-only
replica), and hostile items (see :mod:`bench.hostile`) are pushed onto the queues among the real traffic;
then the ledger.

    python -m bench.soak [--tasks 100000] [--events 5000] [--kill-every 3] [--redis-restarts 2]
                         [--refuse-writes 4] [--refuse-s 2] [--hostile 200] [--seed 1]

At the end every dispatched task must be accounted for: dispatched = succeeded + failed + dead-lettered +
cancelled, nothing left queued, scheduled or unacked, no task run twice unless its handler is idempotent
and says so, and every hostile item dead-lettered (none run). Exit code 0 only if the ledger balances.
``tests/faults/test_soak.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.harness import QUEUES, ROOT, Worker, base_env, wait_until
from bench.hostile import hostile_item
from meetingtasks.core.errors import BrokerUnavailable
from meetingtasks.operations.embedded import RedisServer, free_port
from meetingtasks.services import SERVICES
from meetingtasks.store.status_schema import Status

#: The states a task ends in: every dispatched task must be in one when the soak ends.
FINAL_STATES = tuple(s.value for s in Status if s.is_terminal)


@dataclass
class Ledger:
    dispatched: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    expected_dead: int = 0
    ran_twice: int = 0
    ran_twice_not_idempotent: int = 0
    never_ran: int = 0
    left_queued: int = 0
    left_scheduled: int = 0
    left_unacked: int = 0
    worker_kills: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    events: int = 0
    redis_restarts: int = 0
    write_refusals: Counter[str] = field(default_factory=Counter)
    hostile: Counter[str] = field(default_factory=Counter)
    hostile_dead: int = 0
    hostile_ran: int = 0
    elapsed_s: float = 0.0

    @property
    def accounted(self) -> int:
        return sum(self.outcomes[s] for s in FINAL_STATES)

    @property
    def balanced(self) -> bool:
        return (self.accounted == self.dispatched and self.left_queued == 0 and self.left_scheduled == 0
                and self.left_unacked == 0 and self.ran_twice_not_idempotent == 0
                and self.outcomes["DEAD_LETTERED"] == self.expected_dead and self.never_ran == 0
                and self.hostile_dead == self.hostile.total() and self.hostile_ran == 0)

    def report(self) -> str:
        lines = [
            f"dispatched        {self.dispatched:>8}",
            *(f"  {name:<16}{self.outcomes[name]:>8}" for name in FINAL_STATES),
            f"  (other)         {self.dispatched - self.accounted:>8}   {dict(self.outcomes)}",
            f"dead letters expected {self.expected_dead}",
            f"ran more often than their failures explain (idempotent handlers) {self.ran_twice}; "
            f"not idempotent {self.ran_twice_not_idempotent}; never ran {self.never_ran}",
            f"left queued {self.left_queued}, scheduled {self.left_scheduled}, unacked {self.left_unacked}",
            f"events published {self.events} (each triggers one task, counted in dispatched)",
            f"hostile items pushed {self.hostile.total()} {dict(sorted(self.hostile.items()))}",
            f"  dead-lettered {self.hostile_dead}, ran {self.hostile_ran}",
            f"SIGKILLs {self.worker_kills} {dict(sorted(self.kills.items()))}, Redis restarts {self.redis_restarts}, "
            f"windows of refused writes {dict(self.write_refusals)}, {self.elapsed_s:.0f} s",
            "BALANCED" if self.balanced else "NOT BALANCED",
        ]
        return "\n".join(lines)


class Soak:
    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.server = RedisServer(tmp / "redis", appendfsync="everysec").start()
        self.env = base_env(
            self.server.url,
            MEETINGTASKS_INCLUDE="bench.soak_tasks",
            MEETINGTASKS_VISIBILITY_TIMEOUT_S="3",
            MEETINGTASKS_RESTORE_INTERVAL_S="0.5",
            MEETINGTASKS_MAX_DELIVERIES="20",
            MEETINGTASKS_PUMP_INTERVAL_S="0.1",
            MEETINGTASKS_BRIDGE_CLAIM_IDLE_S="2",
            MEETINGTASKS_BRIDGE_CLAIM_INTERVAL_S="0.5",
        )
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("MEETINGTASKS_")})
        self.tmp = tmp
        self.workers: dict[str, Worker] = {}
        self.ids: list[str] = []
        self.expected_runs: dict[str, int] = {}
        self.ledger = Ledger()
        self.lock = threading.Lock()
        self.stop_killing = threading.Event()
        self.kill_order: list[str] = []
        self.nowhere_port = free_port()  # a primary that never answers, for the read-only windows

    def start_part(self, part: str) -> None:
        """Start (or restart) a worker of a service, the bridge, or beat."""
        log = self.tmp / f"{part}-{time.monotonic_ns()}.log"
        if part == "bridge":
            argv = [sys.executable, "-m", "meetingtasks", "bridge"]
        elif part == "beat":
            argv = [sys.executable, "-m", "meetingtasks", "beat", "--loglevel", "WARNING"]
        else:
            argv = [sys.executable, "-m", "meetingtasks", "worker", part, "--pool", "threads", "--concurrency", "4",
                    "--loglevel", "WARNING", "--without-mingle", "--without-gossip"]
        self.workers[part] = Worker(argv, self.env, log)

    def killer(self) -> None:
        """SIGKILL a random worker every ``--kill-every`` seconds until told to stop."""
        while not self.stop_killing.wait(self.args.kill_every):
            with self.lock:
                self.kill_one()

    def kill_one(self) -> None:
        # Round-robin over a shuffled order: every part (workers, bridge, beat) is killed in turn.
        if not self.kill_order:
            self.kill_order = sorted(self.workers)
            self.rng.shuffle(self.kill_order)
        service = self.kill_order.pop()
        worker = self.workers[service]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        worker.stop()
        self.ledger.worker_kills += 1
        self.ledger.kills[service] = self.ledger.kills.get(service, 0) + 1
        self.start_part(service)

    def restart_redis(self) -> None:
        self.server.stop()  # SIGTERM: Redis flushes its append-only file before exiting
        time.sleep(0.5)
        self.server.start()
        from meetingtasks.store.connections import reset_shared_clients

        reset_shared_clients()
        self.ledger.redis_restarts += 1

    def refuse_writes(self, how: str) -> None:
        """For ``--refuse-s`` seconds Redis refuses every write but stays up: ``oom`` (maxmemory of one byte,
        no eviction: what a full Redis answers) or ``readonly`` (a replica of a primary that is not there: what
        a client reaches during a failover before it learns the new primary). The dataset is kept either way."""
        client = redis.Redis.from_url(self.server.url)
        with self.lock:
            if how == "oom":
                client.config_set("maxmemory-policy", "noeviction")
                client.config_set("maxmemory", 1)
            else:
                client.replicaof("127.0.0.1", self.nowhere_port)
            self.ledger.write_refusals[how] += 1
        time.sleep(self.args.refuse_s)
        with self.lock:
            client.config_set("maxmemory", 0)
            client.replicaof("no", "one")
        client.close()

    def push_hostile(self, count: int) -> None:
        """Push ``count`` hostile items onto random queues of random services (one LPUSH each, as a foreign
        producer would)."""
        client = redis.Redis.from_url(self.server.url)
        for _ in range(count):
            service = self.rng.choice(SERVICES)
            queue = f"{service}.{self.rng.choice(QUEUES)}"
            kind, raw = hostile_item(self.rng, f"soak_{service}", queue)
            for _attempt in range(100):
                try:
                    with self.lock:
                        client.lpush(queue, raw)
                    break
                except redis.RedisError:
                    time.sleep(0.1)  # Redis restarting or refusing writes: push it again
            else:
                raise RuntimeError("Redis did not take a hostile item")
            self.ledger.hostile[kind] += 1
        client.close()

    def dispatch_all(self) -> None:
        from meetingtasks import dispatch_batch

        n = self.args.tasks
        plan = []
        for i in range(n):
            roll = self.rng.random()
            fail = "always" if roll < 0.01 else "once" if roll < 0.06 else "never"
            item = {"type": f"soak_{self.rng.choice(SERVICES)}", "priority": self.rng.choice(QUEUES),
                    "payload": {"id": f"s{i}", "fail": fail, "work_ms": self.rng.choice((0, 0, 0, 1, 5))}}
            if self.rng.random() < 0.05:
                item["delay"] = self.rng.uniform(0.1, 5.0)
            plan.append(item)
            self.ledger.expected_dead += fail == "always"
            self.expected_runs[f"s{i}"] = {"never": 1, "once": 2, "always": 3}[fail]
        batches = [plan[i:i + 500] for i in range(0, n, 500)]
        events_per_batch = -(-self.args.events // max(1, len(batches)))
        events_left = self.args.events
        restarts_left = self.args.redis_restarts
        restart_points = {len(batches) * (k + 1) // (restarts_left + 1) for k in range(restarts_left)}
        windows = self.args.refuse_writes
        # Windows of refused writes, spread between the restarts: (batch index -> how), alternating kinds.
        window_points = {len(batches) * (2 * k + 1) // (2 * windows + 1): ("oom", "readonly")[k % 2]
                         for k in range(windows)}
        hostile_per_batch = -(-self.args.hostile // max(1, len(batches)))
        hostile_left = self.args.hostile
        refusers: list[threading.Thread] = []
        for index, batch in enumerate(batches):
            if index in window_points:
                refuser = threading.Thread(target=self.refuse_writes, args=(window_points[index],), daemon=True)
                refuser.start()
                refusers.append(refuser)
            for _attempt in range(200):
                try:
                    # Under the lock a window of refused writes starts or ends only between two batches, and
                    # a batch of 500 is one script call: refused whole, or queued whole.
                    with self.lock:
                        handles = dispatch_batch(batch)
                    break
                except (redis.RedisError, BrokerUnavailable, OSError):
                    time.sleep(0.1)  # Redis restarting or refusing writes: nothing was queued, send it again
            else:
                raise RuntimeError("Redis did not come back")
            self.ids += [h.id for h in handles]
            self.ledger.dispatched += len(handles)
            count = min(events_per_batch, events_left)
            if count:
                self.publish(count)
                events_left -= count
            count = min(hostile_per_batch, hostile_left)
            if count:
                self.push_hostile(count)
                hostile_left -= count
            if index in restart_points:
                with self.lock:
                    self.restart_redis()
            time.sleep(self.args.pace_s)
        for refuser in refusers:
            refuser.join()

    def publish(self, count: int) -> None:
        """Publish ``count`` events; each triggers one soak task through the bridge, with a known id."""
        from bench.soak_tasks import EVENT_CHANNEL, EVENT_TYPE, soak_from_event  # noqa: F401
        from meetingtasks.events import publish_events
        from meetingtasks.events.subscriptions import SUBSCRIPTIONS

        (sub,) = [s for s in SUBSCRIPTIONS.for_event(EVENT_CHANNEL, EVENT_TYPE) if s.task_type == "soak_meeting"]
        items = []
        for _ in range(count):
            n = self.ledger.events
            self.ledger.events += 1
            fail = "once" if self.rng.random() < 0.05 else "never"
            self.expected_runs[f"e{n}"] = 2 if fail == "once" else 1
            items.append({"channel": EVENT_CHANNEL, "type": EVENT_TYPE, "source": "soak",
                          "payload": {"id": f"e{n}", "fail": fail}})
        for _attempt in range(200):
            try:
                with self.lock:
                    published = publish_events(items)
                break
            except (redis.RedisError, BrokerUnavailable, OSError):
                time.sleep(0.1)
        else:
            raise RuntimeError("Redis did not come back")
        self.ids += [sub.task_id(event.id) for event in published]
        self.ledger.dispatched += len(published)

    def settle(self) -> None:
        """Keep killing workers for a while, then let the platform finish everything."""
        from meetingtasks.store.platform import get_platform

        p = get_platform()
        client = p.redis()
        deadline = time.monotonic() + self.args.settle_s

        def finished() -> bool:
            if time.monotonic() >= deadline:
                self.stop_killing.set()
            waiting = sum(int(client.llen(f"{s}.{q}")) for s in SERVICES for q in QUEUES)
            waiting += sum(p.delayed.count(client, s) for s in SERVICES)
            waiting += sum(int(client.hlen(p.keys.unacked(s))) for s in SERVICES)
            if self.args.events:
                waiting += self.events_unhandled(client, p)
            return waiting == 0 and time.monotonic() >= deadline

        try:
            wait_until(finished, self.args.timeout_s, "the platform to finish every task", 0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; left: {self.leftovers(client, p)}") from None

    def leftovers(self, client: redis.Redis, p: Any) -> dict[str, int]:
        """What keeps the soak from settling, by place: non-empty queues, delayed sets, unacked hashes, events."""
        left = {f"{s}.{q}": int(client.llen(f"{s}.{q}")) for s in SERVICES for q in QUEUES}
        left |= {f"delayed:{s}": p.delayed.count(client, s) for s in SERVICES}
        left |= {f"unacked:{s}": int(client.hlen(p.keys.unacked(s))) for s in SERVICES}
        if self.args.events:
            left["events unhandled"] = self.events_unhandled(client, p)
        return {place: n for place, n in left.items() if n}

    def events_unhandled(self, client: redis.Redis, p: object) -> int:
        """Events the bridge has not yet turned into tasks: not delivered to the group, or pending."""
        from bench.soak_tasks import EVENT_CHANNEL

        keys = p.keys  # type: ignore[attr-defined]
        stream = keys.event_stream(EVENT_CHANNEL)
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:
            return 1  # no stream or group yet
        group = next((g for g in groups if g["name"] in (keys.bridge_group, keys.bridge_group.encode())), None)
        if group is None:
            return 1
        last = client.xinfo_stream(stream)["last-generated-id"]
        behind = 0 if group["last-delivered-id"] == last else 1
        return int(group["pending"]) + behind

    def count(self) -> None:
        from meetingtasks.store.platform import get_platform

        p = get_platform()
        client = p.redis()
        for start in range(0, len(self.ids), 1000):
            chunk = self.ids[start:start + 1000]
            with client.pipeline(transaction=False) as pipe:
                for task_id in chunk:
                    pipe.hget(p.keys.status(task_id), "status")
                for status in pipe.execute():
                    self.ledger.outcomes[status.decode() if status else "MISSING"] += 1
        runs = {k.decode(): int(v) for k, v in client.hgetall("soak:runs").items()}
        self.ledger.hostile_ran = sum(1 for i in runs if i.startswith("hostile-"))
        letters = sum(p.dead_letters.count(client, s) for s in SERVICES)
        self.ledger.hostile_dead = letters - self.ledger.outcomes["DEAD_LETTERED"]
        # More runs than its failures explain: a redelivery after a kill (allowed: the handler is idempotent).
        self.ledger.ran_twice = sum(1 for i, n in runs.items() if n > self.expected_runs.get(i, 1))
        self.ledger.never_ran = sum(1 for i in self.expected_runs if i not in runs)
        self.ledger.left_queued = sum(int(client.llen(f"{s}.{q}")) for s in SERVICES for q in QUEUES)
        self.ledger.left_scheduled = sum(p.delayed.count(client, s) for s in SERVICES)
        self.ledger.left_unacked = sum(int(client.hlen(p.keys.unacked(s))) for s in SERVICES)

    def run(self) -> Ledger:
        import bench.soak_tasks  # noqa: F401 - registers the soak task types
        from meetingtasks.store.platform import configure

        configure()
        started = time.monotonic()
        for service in SERVICES:
            self.start_part(service)
        if self.args.events:
            self.start_part("bridge")
        if self.args.beat:
            self.start_part("beat")
        killer = threading.Thread(target=self.killer, daemon=True)
        killer.start()
        try:
            self.dispatch_all()
            self.settle()
            self.count()
        finally:
            self.stop_killing.set()
            killer.join()
            for worker in self.workers.values():
                worker.stop()
            self.server.stop()
        self.ledger.elapsed_s = time.monotonic() - started
        return self.ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000, help="events triggering tasks through the bridge")
    parser.add_argument("--no-beat", dest="beat", action="store_false", help="run without a beat process")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between worker SIGKILLs")
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--refuse-writes", type=int, default=4,
                        help="windows in which Redis refuses every write (out of memory, read-only replica in turn)")
    parser.add_argument("--refuse-s", type=float, default=2.0, help="seconds each window of refused writes lasts")
    parser.add_argument("--hostile", type=int, default=200, help="hostile items pushed onto the queues")
    parser.add_argument("--settle-s", type=float, default=10.0, help="seconds of kills after the last dispatch")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pace-s", type=float, default=0.05, help="pause between batches of 500 dispatches")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Soak(Path(tmp), args).run()
    print(ledger.report())
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**ledger.__dict__, "outcomes": dict(ledger.outcomes), "hostile": dict(ledger.hostile),
                               "write_refusals": dict(ledger.write_refusals), "balanced": ledger.balanced},
                              indent=2))
    return 0 if ledger.balanced else 1


if __name__ == "__main__":
    raise SystemExit(main())
