from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "platform_app"
    verbose_name = "Local platform"
