"""Settings: every knob comes from the environment, with a safe development default.

No environment at all gives the embedded default: SQLite under var/, Celery on kombu's
filesystem transport under var/broker/, the local session gateway. DATABASE_URL and
CELERY_BROKER_URL (or REDIS_URL) switch to PostgreSQL and Redis.
"""

import os
import zoneinfo
from pathlib import Path

# Use only the pinned `tzdata` package, never the operating system's copy, so fire times do not
# drift with the machine. Must run before anything (django-timezone-field) caches ZoneInfo objects.
zoneinfo.reset_tzpath(to=[])

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return float(value)


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "insecure-development-key-do-not-use-in-production"
    else:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (set DEBUG=1 for development)")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] + (["*"] if DEBUG else []))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "accounts_app",
    "platform_app",
    "deployments_app",
    "runs_app",
    "webhooks_app",
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "core.metrics.HttpMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
# Persistent connections (web requests and worker tasks alike) are checked before their first use in
# each request or task, so one broken by a database restart is replaced instead of failing that fire.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", True),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, scheduler) share one file: wait for the lock
    # instead of failing, and use WAL so readers do not block the writer.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("TEST_DATABASE_NAME") or None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))

# --- API ---------------------------------------------------------------------------------
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", None)
# Seconds each web process remembers an API key's lookup (the key, its organization and workspace):
# a key revoked, or an organization or workspace changed, in another process is seen at most this
# long after (at once in the process that made the change). 0 looks the key up on every request.
AUTH_CACHE_SECONDS = env_float("AUTH_CACHE_SECONDS", 1.0)
REQUIRED_BETA = "managed-agents-2026-04-01"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.auth.HasApiKey"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["core.throttle.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.openapi.ApiAutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Scheduled Deployments API",
    "DESCRIPTION": "Run AI-agent deployments on cron schedules; wire-compatible with the Managed Agents API.",
    "VERSION": "2026-04-01",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/v1",
    # Response and request bodies come from the official SDK's pydantic types (JSON Schema 2020-12).
    "OAS_VERSION": "3.1.0",
    "PREPROCESSING_HOOKS": ["core.openapi.only_v1_api"],
    # Enums stay inline, as in the SDK's types (no generated "StatusEnum" components).
    "POSTPROCESSING_HOOKS": [],
    "SERVE_PUBLIC": True,
    # Swagger UI would otherwise show a badge fetched from validator.swagger.io: no outside requests.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "displayOperationId": True},
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}

# --- Secrets at rest ---------------------------------------------------------------------
# Fernet keys (comma-separated, newest first) for secrets stored in the database. When unset,
# one is derived from SECRET_KEY, which is fine for development only.
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS", [])

# --- Cache (API rate-limit counters) ----------------------------------------------------------
CACHE_URL = os.environ.get("CACHE_URL") or os.environ.get("REDIS_URL") or ""
if not CACHE_URL and os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
    CACHE_URL = os.environ["CELERY_BROKER_URL"]
if CACHE_URL.startswith("redis"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
                          "KEY_PREFIX": "sd"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(VAR_DIR / "cache")}}

# --- Celery ------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Redis redelivers unacknowledged messages after this long; fires are also recovered from
    # PostgreSQL, so this only needs to exceed the longest fire.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 300)}
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "celery")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "runs_app.scheduler:FireScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 1
CELERY_TIMEZONE = "UTC"
# Without this, Celery's Django fixup closes the database connection around every task: a worker
# then opens a new PostgreSQL connection (a server process) per fire, which cost more CPU than the
# fire itself. Connections are recycled by CONN_MAX_AGE instead (runs_app/tasks.py).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1_000_000)

# --- Scheduler and firing ----------------------------------------------------------------
SCHEDULER_MAX_JITTER_SECONDS = env_float("SCHEDULER_MAX_JITTER_SECONDS", 10.0)
SCHEDULER_CATCHUP_WINDOW_SECONDS = env_int("SCHEDULER_CATCHUP_WINDOW_SECONDS", 300)
SCHEDULER_TICK_SECONDS = env_float("SCHEDULER_TICK_SECONDS", 1.0)
# A tick claims fires due up to this far ahead and publishes them with the remaining countdown, so
# the fires of a busy minute are written and in the workers' hands before it starts. Safe to make
# long: a worker skips a fire whose deployment was paused, archived or rescheduled since.
SCHEDULER_LOOKAHEAD_SECONDS = env_float("SCHEDULER_LOOKAHEAD_SECONDS", 5.0)
SCHEDULER_BATCH_SIZE = env_int("SCHEDULER_BATCH_SIZE", 500)
FIRE_LEASE_SECONDS = env_int("FIRE_LEASE_SECONDS", 30)
# Fires due within FIRE_BATCH_WINDOW_SECONDS of each other travel as one message of at most
# FIRE_BATCH_SIZE fires, claimed and recorded together by one worker.
FIRE_BATCH_SIZE = env_int("FIRE_BATCH_SIZE", 50)
FIRE_BATCH_WINDOW_SECONDS = env_float("FIRE_BATCH_WINDOW_SECONDS", 0.1)
FIRE_RECOVERY_GRACE_SECONDS = env_int("FIRE_RECOVERY_GRACE_SECONDS", 15)
ORG_SCHEDULED_DEPLOYMENT_LIMIT = env_int("ORG_SCHEDULED_DEPLOYMENT_LIMIT", 1000)
# POST /v1/deployments/{id}/backfill: the longest time range and the most occurrences per request.
BACKFILL_MAX_RANGE_DAYS = env_int("BACKFILL_MAX_RANGE_DAYS", 31)
BACKFILL_MAX_RUNS = env_int("BACKFILL_MAX_RUNS", 100)

# --- Session gateway ---------------------------------------------------------------------
SESSION_GATEWAY = os.environ.get("SESSION_GATEWAY", "local")
LOCAL_SESSION_RATE_LIMIT_PER_MINUTE = env_int("LOCAL_SESSION_RATE_LIMIT_PER_MINUTE", None)
GATEWAY_RETRY_ATTEMPTS = env_int("GATEWAY_RETRY_ATTEMPTS", 3)
GATEWAY_RETRY_BACKOFF_SECONDS = env_float("GATEWAY_RETRY_BACKOFF_SECONDS", 0.2)
ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL") or None
# Remote platform (SESSION_GATEWAY=anthropic): calls in flight at once per worker process, and the
# patience of each call (a fire retries a call that timed out, with the same idempotency key).
UPSTREAM_MAX_IN_FLIGHT = env_int("UPSTREAM_MAX_IN_FLIGHT", 64)
UPSTREAM_TIMEOUT_SECONDS = env_float("UPSTREAM_TIMEOUT_SECONDS", 10.0)
UPSTREAM_CONNECT_TIMEOUT_SECONDS = env_float("UPSTREAM_CONNECT_TIMEOUT_SECONDS", 3.0)

# --- Outgoing webhooks ---------------------------------------------------------------------
# Deliveries run on a queue of their own, consumed by a worker of its own (`-Q webhooks -P threads`),
# so a slow or dead endpoint never delays a fire.
WEBHOOK_QUEUE = os.environ.get("WEBHOOK_QUEUE", "webhooks")
WEBHOOK_WORKER_CONCURRENCY = env_int("WEBHOOK_WORKER_CONCURRENCY", 8)
# Private, loopback and link-local targets are refused unless this is on (default: only with DEBUG).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", DEBUG)
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env_float("WEBHOOK_CONNECT_TIMEOUT_SECONDS", 5.0)
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 15.0)
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 5.0)
WEBHOOK_RETRY_MAX_INTERVAL_SECONDS = env_float("WEBHOOK_RETRY_MAX_INTERVAL_SECONDS", 3600.0)
WEBHOOK_RETRY_FOR_SECONDS = env_float("WEBHOOK_RETRY_FOR_SECONDS", 86400.0)
WEBHOOK_DISABLE_AFTER_SECONDS = env_float("WEBHOOK_DISABLE_AFTER_SECONDS", 3 * 86400.0)
WEBHOOK_SECRET_ROTATION_GRACE_SECONDS = env_float("WEBHOOK_SECRET_ROTATION_GRACE_SECONDS", 86400.0)
WEBHOOK_DELIVERY_BATCH_SIZE = env_int("WEBHOOK_DELIVERY_BATCH_SIZE", 50)
# Batches in flight per endpoint, across all webhooks workers: what one slow endpoint can hold.
WEBHOOK_ENDPOINT_CONCURRENCY = env_int("WEBHOOK_ENDPOINT_CONCURRENCY", 2)
WEBHOOK_DELIVERY_LEASE_SECONDS = env_float("WEBHOOK_DELIVERY_LEASE_SECONDS", 120.0)
WEBHOOK_SWEEP_SECONDS = env_float("WEBHOOK_SWEEP_SECONDS", 2.0)
WEBHOOK_REPUBLISH_GRACE_SECONDS = env_float("WEBHOOK_REPUBLISH_GRACE_SECONDS", 60.0)
WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = env_float("WEBHOOK_SUBSCRIPTION_CACHE_SECONDS", 1.0)
WEBHOOK_RETENTION_DAYS = env_int("WEBHOOK_RETENTION_DAYS", 30)
# Sent by the scheduler (celery beat): finds what doorbells and killed workers left behind.
CELERY_BEAT_SCHEDULE = {
    "webhooks.sweep": {
        "task": "webhooks.sweep",
        "schedule": WEBHOOK_SWEEP_SECONDS,
        "options": {"queue": WEBHOOK_QUEUE, "expires": max(WEBHOOK_SWEEP_SECONDS * 5, 10.0)},
    },
}

# --- Logging -----------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logging.ContextFilter"}},
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Replace Django's default plain-text handlers (console in DEBUG, runserver's own format) so
        # every line is JSON, whatever DEBUG is.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "celery": {"level": LOG_LEVEL},
        # billiard (Celery's process pool) logs through "multiprocessing" with propagation off; without
        # a handler of its own its lines would bypass the JSON format.
        "multiprocessing": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        # The SDK's HTTP client writes a line per request at INFO: one per fire through a remote
        # platform (10,000 per burst). Our own lines already say what each call did.
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
    },
}
