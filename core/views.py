from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core.errors import envelope


@csrf_exempt
def unknown_api_route(request, path=""):
    shown = path if len(path) <= 200 else path[:199] + "…"
    return envelope(request, "not_found_error", f"no such endpoint: {request.method[:16]} /v1/{shown}")


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    from django.conf import settings
    from kombu import Connection

    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 — any failure means "not ready"
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                        connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}"
    failing = [name for name, value in checks.items() if value != "ok"]
    status = 503 if failing else 200
    body = {"status": "ready" if not failing else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=status)


def metrics(request):
    """Prometheus text format. No API key: expose it only where Prometheus can reach it."""
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

    from core.metrics import exposition

    # generate_latest writes the classic 0.0.4 text format, which every Prometheus version reads.
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
