from django.urls import path

from webhooks_app import views

urlpatterns = [
    path("organizations/webhooks", views.WebhookEndpointListCreateView.as_view(), name="webhook-endpoint-list"),
    path("organizations/webhooks/<str:endpoint_id>", views.WebhookEndpointDetailView.as_view(),
         name="webhook-endpoint-detail"),
    path("organizations/webhooks/<str:endpoint_id>/regenerate_signing_secret",
         views.WebhookEndpointSigningSecretView.as_view(), name="webhook-endpoint-regenerate-secret"),
]
