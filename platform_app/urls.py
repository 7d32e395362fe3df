from django.urls import path

from platform_app import views

urlpatterns = [
    path("agents", views.AgentListCreateView.as_view(), name="agent-list"),
    path("agents/<str:agent_id>", views.AgentDetailView.as_view(), name="agent-detail"),
    path("agents/<str:agent_id>/versions", views.AgentVersionListView.as_view(), name="agent-versions"),
    path("agents/<str:agent_id>/archive", views.AgentArchiveView.as_view(), name="agent-archive"),
    path("environments", views.EnvironmentListCreateView.as_view(), name="environment-list"),
    path("environments/<str:environment_id>", views.EnvironmentDetailView.as_view(), name="environment-detail"),
    path("environments/<str:environment_id>/archive", views.EnvironmentArchiveView.as_view(), name="environment-archive"),
    path("vaults", views.VaultListCreateView.as_view(), name="vault-list"),
    path("vaults/<str:vault_id>", views.VaultDetailView.as_view(), name="vault-detail"),
    path("vaults/<str:vault_id>/archive", views.VaultArchiveView.as_view(), name="vault-archive"),
    path("sessions", views.SessionListCreateView.as_view(), name="session-list"),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
]
