from celery import shared_task

from runs_app import firing


@shared_task(name="runs.fire", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fire(fire_id: str) -> str:
    """Execute one fire. Safe to deliver more than once: only a worker that claims it acts."""
    return firing.execute_fire(fire_id).status


@shared_task(name="runs.recover", ignore_result=True)
def recover() -> int:
    """Re-publish fires whose message or worker was lost (also run by every scheduler tick)."""
    from runs_app.scheduler import recover as recover_fires

    return recover_fires()
