from django.urls import path

from deployments_app import views

urlpatterns = [
    path("deployments", views.DeploymentListCreateView.as_view(), name="deployment-list"),
    path("deployments/<str:deployment_id>", views.DeploymentDetailView.as_view(), name="deployment-detail"),
]
