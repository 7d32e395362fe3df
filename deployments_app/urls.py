from django.urls import path

from deployments_app import views

urlpatterns = [
    path("deployments", views.DeploymentListCreateView.as_view(), name="deployment-list"),
    # Before `deployments/<id>`, so "schedule_preview" is never taken for a deployment id.
    path("deployments/schedule_preview", views.SchedulePreviewView.as_view(), name="deployment-schedule-preview"),
    path("deployments/<str:deployment_id>", views.DeploymentDetailView.as_view(), name="deployment-detail"),
    path("deployments/<str:deployment_id>/pause", views.DeploymentPauseView.as_view(), name="deployment-pause"),
    path("deployments/<str:deployment_id>/unpause", views.DeploymentUnpauseView.as_view(), name="deployment-unpause"),
    path("deployments/<str:deployment_id>/archive", views.DeploymentArchiveView.as_view(), name="deployment-archive"),
]
