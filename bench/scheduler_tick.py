"""Scheduler tick cost: ours (runs_app.scheduler) against django-celery-beat's DatabaseScheduler.

Usage (from the repository root; PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python bench/scheduler_tick.py [--sizes 1000,10000,100000] [--no-write]

Both sides get the same N schedules, in-process, timed with time.perf_counter (medians):

- ours: N deployments (bulk_create), each daily at a random hour, at a minute ~30 minutes away,
  so none is due. `tick()` is runs_app.scheduler.tick(): claim what is due (none), publish
  (nothing), recovery sweep. "1% due": N/100 of them get next_fire_at in the past; each
  timed tick claims them, writes their fires and publishes them to Redis (a queue of its own);
  they are re-armed, untimed, between ticks. A pause / a schedule update is the service call
  (deployments_app.services.deployment_pause / deployment_update) plus the next tick.
- peer: one CrontabSchedule + one PeriodicTask per deployment, the same hours and minutes, the
  1% as hourly tasks whose last run is 2 h old (hence due). Initial load: the scheduler as
  `celery beat` builds it (DatabaseScheduler(app), setup_schedule) plus its first tick (the
  heap). Idle tick: Scheduler.tick() with nothing changed and nothing due. "1% due": ticks until
  every due task has been sent (it sends one per tick) — the same number of messages as ours.
  A pause / an update: change one PeriodicTask (the model's save signals the change, as the
  admin does) plus the next tick, which reloads every task and rebuilds the heap.

Prints one summary line and appends a dated section to docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

QUEUE = f"bench-tick-{uuid.uuid4().hex[:8]}"
TARGET_IDLE_MS = 5.0


def timed(fn, repeat: int, setup=None) -> list[float]:
    """Milliseconds of fn() for `repeat` calls; setup() (untimed) runs before each."""
    out = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def drop_queue() -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(QUEUE)
    client.close()


# --- ours --------------------------------------------------------------------------------------


def seed_ours(count: int, minute: int) -> list[str]:
    """N deployments of one organization; returns the ids of the 1% to make due."""
    from django.utils import timezone

    from accounts_app.services import default_workspace, organization_get_or_create
    from deployments_app import schedule
    from deployments_app.models import Deployment
    from tests.factories import USER_MESSAGE, make_agent, make_environment

    common.truncate("runs_app_deploymentrun", "runs_app_fire", "platform_app_session", "deployments_app_deployment")

    class Tenant:
        organization = organization_get_or_create(name="bench-tick")
        workspace = default_workspace(organization)

    agent = make_agent(Tenant, name="tick agent")
    environment = make_environment(Tenant, name="tick env")
    now = timezone.now()
    rng = random.Random(count)
    next_at: dict[str, object] = {}
    rows = []
    for i in range(count):
        expression = f"{minute} {rng.randrange(24)} * * *"
        if expression not in next_at:
            next_at[expression] = schedule.next_fires(expression, "UTC", now, 1)[0]
        rows.append(Deployment(
            organization=Tenant.organization, workspace=Tenant.workspace, name=f"tick {i}",
            agent_id=agent.id, agent_version=1, environment_id=environment.id, initial_events=[USER_MESSAGE],
            schedule_expression=expression, schedule_timezone="UTC", next_fire_at=next_at[expression],
            jitter_fraction=rng.random(),
        ))
    Deployment.objects.bulk_create(rows, batch_size=5000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE deployments_app_deployment")
    return [row.pk for row in rows[:: 100]]


def bench_ours(count: int, due_ids: list[str], repeat_idle: int, repeat_due: int, repeat_change: int) -> dict:
    from django.utils import timezone

    from deployments_app.models import Deployment
    from deployments_app.services import deployment_pause, deployment_unpause, deployment_update
    from runs_app import scheduler
    from runs_app.models import Fire

    for _ in range(5):
        scheduler.tick()
    out = {"idle_tick": timed(scheduler.tick, repeat_idle), "idle_claim": timed(scheduler.claim_due, repeat_idle)}

    def arm():
        Fire.objects.filter(deployment_id__in=due_ids).delete()
        Deployment.objects.filter(pk__in=due_ids).update(next_fire_at=timezone.now() - timedelta(seconds=1))

    ticks = []

    def due_tick():
        ticks.append(scheduler.tick())

    out["due_tick"] = timed(due_tick, repeat_due, setup=arm)
    out["due_fires"] = min(len(t.fires) for t in ticks)
    Fire.objects.all().delete()
    Deployment.objects.filter(pk__in=due_ids).update(
        next_fire_at=Deployment.objects.exclude(pk__in=due_ids).values("next_fire_at")[:1]
    )

    target = Deployment.objects.exclude(pk__in=due_ids).first()
    expressions = [target.schedule_expression, "0 12 * * 1-5"]

    def pause():
        deployment_pause(deployment=target)
        scheduler.tick()

    def unpause():
        deployment_unpause(deployment=target)

    out["pause"] = timed(pause, repeat_change, setup=unpause)
    deployment_unpause(deployment=target)
    flip = {"i": 0}

    def update():
        flip["i"] += 1
        deployment_update(deployment=target, data={"schedule": {"type": "cron", "expression": expressions[flip["i"] % 2],
                                                              "timezone": "UTC"}})
        scheduler.tick()

    out["update"] = timed(update, repeat_change)
    return out


# --- django-celery-beat ------------------------------------------------------------------------


def seed_peer(count: int, minute: int) -> list[int]:
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

    common.truncate("django_celery_beat_periodictask", "django_celery_beat_crontabschedule",
                    "django_celery_beat_periodictasks")
    rng = random.Random(count)
    now = timezone.now()
    crontabs = []
    for i in range(count):
        hour = "*" if i % 100 == 0 else str(rng.randrange(24))
        crontabs.append(CrontabSchedule(minute=str(minute), hour=hour, day_of_week="*", day_of_month="*",
                                        month_of_year="*", timezone="UTC"))
    CrontabSchedule.objects.bulk_create(crontabs, batch_size=5000)
    tasks = [
        PeriodicTask(name=f"deployment {i}", task="bench.noop", crontab=crontab, queue=QUEUE, enabled=True,
                     last_run_at=now)
        for i, crontab in enumerate(crontabs)
    ]
    PeriodicTask.objects.bulk_create(tasks, batch_size=5000)
    PeriodicTasks.update_changed()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE django_celery_beat_periodictask")
        cursor.execute("VACUUM ANALYZE django_celery_beat_crontabschedule")
    return [task.pk for i, task in enumerate(tasks) if i % 100 == 0]


def new_peer():
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery import app

    return DatabaseScheduler(app=app)


def bench_peer(count: int, due_ids: list[int], repeat_idle: int, repeat_load: int, repeat_change: int) -> dict:
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    out: dict = {}
    holder = {}

    def load():
        holder["s"] = new_peer()
        holder["s"].tick()

    def cleanup():
        holder.pop("s", None)
        gc.collect()

    out["load"] = timed(load, repeat_load, setup=cleanup)
    peer = holder["s"]
    out["loaded"] = len(peer.schedule)
    for _ in range(3):
        peer.tick()
    out["idle_tick"] = timed(peer.tick, repeat_idle)

    sent = {"n": 0}

    def arm():
        PeriodicTask.objects.filter(pk__in=due_ids).update(last_run_at=timezone.now() - timedelta(hours=2))
        holder["s"] = new_peer()
        holder["s"].tick()  # the initial load, untimed; may already send the first due task
        original = holder["s"].apply_entry

        def counting(entry, producer=None):
            sent["n"] += 1
            return original(entry, producer=producer)

        holder["s"].apply_entry = counting
        sent["n"] = 0

    def drain():
        # The untimed first tick (in arm) sends one due task; each further tick sends one more.
        scheduler_ = holder["s"]
        for _ in range(len(due_ids) * 3 + 10):
            if sent["n"] >= len(due_ids) - 1:
                break
            scheduler_.tick()

    out["due_tick"] = timed(drain, max(2, repeat_change // 2), setup=arm)
    out["due_sent"] = sent["n"] + 1
    PeriodicTask.objects.filter(pk__in=due_ids).update(last_run_at=timezone.now())
    holder["s"] = peer = new_peer()
    peer.tick()

    task = PeriodicTask.objects.exclude(pk__in=due_ids).select_related("crontab").first()

    def pause():
        task.enabled = False
        task.save()
        peer.tick()

    def unpause():
        task.enabled = True
        task.save()
        peer.tick()

    out["pause"] = timed(pause, repeat_change, setup=unpause)
    crontab = task.crontab
    hours = [crontab.hour, str((int(crontab.hour) + 12) % 24) if crontab.hour.isdigit() else "12"]
    flip = {"i": 0}

    def update():
        flip["i"] += 1
        crontab.hour = hours[flip["i"] % 2]
        crontab.save()  # a schedule change signals PeriodicTasks, as the admin does
        task.save()
        peer.tick()

    out["update"] = timed(update, repeat_change)
    return out


# --- report ------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    common.configure(CELERY_QUEUE=QUEUE, LOG_LEVEL="WARNING")
    from django.utils import timezone

    load_start = common.loadavg()
    minute = (timezone.now() + timedelta(minutes=30)).minute
    rows = {}
    try:
        for count in sizes:
            repeat_change = 30 if count <= 10_000 else 3
            due_ids = seed_ours(count, minute)
            ours = bench_ours(count, due_ids, repeat_idle=200, repeat_due=10, repeat_change=repeat_change)
            common.truncate("deployments_app_deployment")
            peer_due = seed_peer(count, minute)
            peer = bench_peer(count, peer_due, repeat_idle=200 if count <= 10_000 else 50,
                              repeat_load=5 if count <= 10_000 else 3, repeat_change=repeat_change)
            common.truncate("django_celery_beat_periodictask", "django_celery_beat_crontabschedule")
            rows[count] = (ours, peer)
            med = common.median
            print(
                f"  N={count}: ours idle {med(ours['idle_tick']):.2f} ms, 1% {med(ours['due_tick']):.1f} ms "
                f"({ours['due_fires']} fires), pause {med(ours['pause']):.2f} ms, update {med(ours['update']):.2f} ms | "
                f"peer load {med(peer['load']):.0f} ms ({peer['loaded']} entries), idle {med(peer['idle_tick']):.2f} ms, "
                f"1% {med(peer['due_tick']):.0f} ms ({peer['due_sent']} sent), pause {med(peer['pause']):.0f} ms, "
                f"update {med(peer['update']):.0f} ms",
                file=sys.stderr, flush=True,
            )
    finally:
        drop_queue()
    load_end = common.loadavg()

    med = common.median
    idle = {n: med(o["idle_tick"]) for n, (o, _) in rows.items()}
    flat = max(idle.values()) <= 2 * min(idle.values()) if idle else False
    idle_met = all(v <= TARGET_IDLE_MS for v in idle.values())
    ratios = []
    for n, (o, p) in rows.items():
        for key in ("idle_tick", "due_tick", "pause", "update"):
            ratios.append(med(p[key]) / med(o[key]))
    ahead = all(r > 1 for r in ratios)
    print(
        "scheduler_tick: "
        + " | ".join(
            f"N={n} idle {med(o['idle_tick']):.2f}ms vs {med(p['idle_tick']):.2f}ms "
            f"(×{med(p['idle_tick']) / med(o['idle_tick']):.0f}), 1% {med(o['due_tick']):.0f}ms vs "
            f"{med(p['due_tick']):.0f}ms, update {med(o['update']):.1f}ms vs {med(p['update']):.0f}ms"
            for n, (o, p) in rows.items()
        )
        + f" | idle ≤{TARGET_IDLE_MS:g}ms: {'met' if idle_met else 'NOT met'}, flat in N: {'yes' if flat else 'no'}, "
        f"ahead of peer on every figure: {'yes' if ahead else 'no'}"
    )

    if not args.no_write:
        lines = [
            f"## scheduler_tick — {common.stamp()}",
            "",
            f"Machine: {common.machine()}; {common.load_note(load_start, load_end)}. In-process, "
            "`time.perf_counter`, medians (idle: 200 ticks, 50 for the peer at 100k; 1% due: 10 ticks; "
            "pause/update: 30 changes, 3 at 100k; peer load: 5, 3 at 100k). Ours: runs_app.scheduler.tick(). "
            "Peer: django-celery-beat 2.9.0 DatabaseScheduler, one CrontabSchedule + PeriodicTask per "
            "deployment. Daily schedules at random hours (1% hourly), none due unless stated. "
            "A change (pause, schedule update) is the write plus the next tick on both sides. "
            "Ratio = peer ÷ ours.",
            "",
            "| N | figure | ours (ms) | django-celery-beat (ms) | ratio |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for n, (o, p) in rows.items():
            lines.append(f"| {n:,} | initial load + first tick | {med(o['idle_tick']):.2f} (stateless) | "
                         f"{med(p['load']):.0f} ({p['loaded']:,} entries loaded) | "
                         f"×{med(p['load']) / med(o['idle_tick']):,.0f} |")
            lines.append(f"| {n:,} | idle tick | {med(o['idle_tick']):.2f} | {med(p['idle_tick']):.2f} | "
                         f"×{med(p['idle_tick']) / med(o['idle_tick']):,.1f} |")
            lines.append(f"| {n:,} | 1% due ({o['due_fires']:,} sent) | {med(o['due_tick']):.1f} | "
                         f"{med(p['due_tick']):.0f} | ×{med(p['due_tick']) / med(o['due_tick']):,.1f} |")
            lines.append(f"| {n:,} | pause one + next tick | {med(o['pause']):.2f} | {med(p['pause']):.0f} | "
                         f"×{med(p['pause']) / med(o['pause']):,.0f} |")
            lines.append(f"| {n:,} | schedule update + next tick | {med(o['update']):.2f} | {med(p['update']):.0f} | "
                         f"×{med(p['update']) / med(o['update']):,.0f} |")
        lines += [
            "",
            "Ours, claim only (no publish, no recovery sweep), idle: "
            + ", ".join(f"N={n:,} {med(o['idle_claim']):.2f} ms" for n, (o, _) in rows.items()) + ".",
            "",
            f"Targets: idle tick ≤{TARGET_IDLE_MS:g} ms: {'met' if idle_met else 'NOT met'}; flat in N "
            f"(largest ≤ 2× smallest): {'met' if flat else 'NOT met'}; every figure ahead of the peer: "
            f"{'met' if ahead else 'NOT met'}.",
        ]
        common.append_report(lines)
    return 0 if (idle_met and flat and ahead) else 2


if __name__ == "__main__":
    sys.exit(main())
