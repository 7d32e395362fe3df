import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scheduled_deployments")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(**kwargs):
    """Workers and beat log exactly like the web process: Django's LOGGING (one JSON object per
    line, with the ids in scope). Having a receiver stops Celery from adding its own handlers and
    plain-text format to the root, task and multiprocessing loggers."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.worker_init.connect
def warm_the_gateway(**kwargs):
    """Build the session gateway in the worker's main process, before the pool forks: its imports
    (the SDK of a remote platform: seconds on a busy machine) are then inherited by every pool
    process instead of being paid by each one on its first fire, late."""
    import django

    django.setup()
    from gateways import get_gateway

    get_gateway().warm()


@signals.worker_process_shutdown.connect
def forget_dead_pool_process(pid=None, **kwargs):
    """A pool process is gone: drop its live gauge files so /metrics stops adding them up
    (its counters stay, as Prometheus expects of counters)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    from prometheus_client import multiprocess

    from core.metrics import process_identifier

    multiprocess.mark_process_dead(process_identifier(pid or os.getpid()), directory)
