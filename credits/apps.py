from django.apps import AppConfig


class CreditsConfig(AppConfig):
    """The service credits API: internal services debit and refund a workspace's credits."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "credits"
    verbose_name = "Service credits"

    def ready(self):
        from credits.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
