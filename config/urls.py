from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView

from core import views as core_views
from gateways.passthrough import platform_urlpatterns

api_patterns = [
    # The built-in platform, or the remote one's API forwarded (SESSION_GATEWAY=anthropic).
    path("", include(platform_urlpatterns("platform_app.urls"))),
    path("", include("deployments_app.urls")),
    path("", include("runs_app.urls")),
    path("", include("webhooks_app.urls")),
]

admin.site.site_header = "Scheduled Deployments"
admin.site.site_title = "Scheduled Deployments admin"
admin.site.index_title = "Operations"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics, name="metrics"),
    path(
        "v1/openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="openapi",
    ),
    path("v1/docs", SpectacularSwaggerView.as_view(url_name="openapi", authentication_classes=[], permission_classes=[]), name="api-docs"),
    path(
        "v1/redoc",
        SpectacularRedocView.as_view(
            url_name="openapi", template_name="api/redoc.html", authentication_classes=[], permission_classes=[]
        ),
        name="api-redoc",
    ),
    path("v1/", include(api_patterns)),
    re_path(r"^v1/(?P<path>.*)$", core_views.unknown_api_route),
]
