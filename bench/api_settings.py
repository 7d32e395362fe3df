"""Settings for bench/api_bench.py only: the product's settings with a urlconf that adds the
ceiling endpoint (bench/api_urls.py). Selected with DJANGO_SETTINGS_MODULE=bench.api_settings;
never used by the product."""

from config.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.api_urls"
