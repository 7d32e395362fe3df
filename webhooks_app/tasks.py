"""Tasks of the webhooks queue (WEBHOOK_QUEUE): thin, each calls one service.

They run on a worker of their own (`celery -A config worker -Q webhooks -P threads`), so a slow,
dead or hostile endpoint can only ever occupy webhook workers, never the fire path's.
"""

from celery import shared_task

from webhooks_app import services


@shared_task(name="webhooks.dispatch", ignore_result=True)
def dispatch() -> int:
    """The doorbell rung after a transaction that recorded events commits: fan them out."""
    return services.events_dispatch()


@shared_task(name="webhooks.deliver", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(endpoint_id: str, delivery_ids: list[int]) -> dict:
    """Attempt these deliveries to one endpoint. Safe to receive more than once: only deliveries
    this worker claims are sent."""
    return services.deliveries_attempt(endpoint_id=endpoint_id, delivery_ids=[int(pk) for pk in delivery_ids])


@shared_task(name="webhooks.sweep", ignore_result=True)
def sweep() -> dict:
    """Periodic (the scheduler sends it every WEBHOOK_SWEEP_SECONDS): what doorbells and workers lost."""
    return services.webhooks_sweep()
