from django.urls import path

from runs_app import views

urlpatterns = [
    path("deployment_runs", views.DeploymentRunListView.as_view(), name="deployment-run-list"),
    path("deployment_runs/<str:run_id>", views.DeploymentRunDetailView.as_view(), name="deployment-run-detail"),
    path("deployments/<str:deployment_id>/run", views.DeploymentRunNowView.as_view(), name="deployment-run-now"),
    path("deployments/<str:deployment_id>/backfill", views.DeploymentBackfillView.as_view(), name="deployment-backfill"),
]
