from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts_app"
    verbose_name = "Accounts"

    def ready(self):
        """Any saved or deleted key, organization or workspace makes this process forget the
        authentications it remembers (core.auth), so the change applies to its next request."""
        from django.db.models.signals import post_delete, post_save

        from accounts_app.models import ApiKey, Organization, Workspace
        from core.auth import forget_principals

        for model in (ApiKey, Organization, Workspace):
            post_save.connect(forget_principals, sender=model, dispatch_uid=f"forget_principals_{model.__name__}")
            post_delete.connect(forget_principals, sender=model, dispatch_uid=f"forget_principals_del_{model.__name__}")
