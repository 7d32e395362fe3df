from celery import shared_task, signals
from django.db import close_old_connections

from runs_app import firing


@signals.task_prerun.connect
@signals.task_postrun.connect
def recycle_database_connections(**kwargs):
    """Around each task, what Django does around each request: close a connection that is past
    CONN_MAX_AGE or unusable (after a database restart), keep a healthy one. Celery's own Django
    fixup would close it unconditionally — a new PostgreSQL connection per fire — were
    CELERY_DB_REUSE_MAX not set (config/settings.py)."""
    close_old_connections()


@shared_task(name="runs.fire", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fire(fire_id: str) -> str:
    """Execute one fire. Safe to deliver more than once: only a worker that claims it acts."""
    return firing.execute_fire(fire_id).status


@shared_task(name="runs.recover", ignore_result=True)
def recover() -> int:
    """Re-publish fires whose message or worker was lost (also run by every scheduler tick)."""
    from runs_app.scheduler import recover as recover_fires

    return recover_fires()


@shared_task(name="runs.fire_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fire_batch(fire_ids: list[str]) -> dict:
    """Execute fires due at about the same moment, together (what the scheduler publishes). Safe to
    deliver more than once: only fires this worker claims are acted on."""
    results = firing.execute_fires(list(fire_ids))
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts
