from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs_app"
    verbose_name = "Runs"

    def ready(self):
        from runs_app.broker import patch_redis_channel_close

        patch_redis_channel_close()
