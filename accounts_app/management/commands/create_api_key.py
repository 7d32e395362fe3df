from django.core.management.base import BaseCommand

from accounts_app.services import api_key_create, organization_get_or_create, workspace_get_or_create


class Command(BaseCommand):
    help = "Create an API key (and the organization/workspace if missing); prints the key alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--organization", required=True, help="Organization name")
        parser.add_argument("--workspace", help="Bind the key to this workspace (created if missing)")
        parser.add_argument("--name", default="", help="Label for the key")

    def handle(self, *args, organization, workspace=None, name="", **options):
        org = organization_get_or_create(name=organization)
        ws = workspace_get_or_create(organization=org, name=workspace) if workspace else None
        api_key, plain = api_key_create(organization=org, workspace=ws, name=name)
        scope = f"workspace {ws.name} ({ws.id})" if ws else "all workspaces"
        self.stdout.write(f"Created API key {api_key.id} for organization {org.name} ({org.id}), {scope}.")
        self.stdout.write("The key is shown only once:")
        self.stdout.write(plain)
