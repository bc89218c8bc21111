from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_chart(sender, using="default", **kwargs):
    """Re-create missing chart accounts after migrate or flush.

    Migration 0002 seeds the chart; ``flush`` (and every transactional test
    teardown) empties the table and then emits post_migrate, so this puts the
    chart back, as contenttypes does for its rows. Existing rows are left alone.
    """
    from ledger.accounts import CHART
    from ledger.models import Account

    existing = set(Account.objects.using(using).values_list("code", flat=True))
    Account.objects.using(using).bulk_create(
        Account(code=code, name=name, type=type_, normal_side=side, active=True)
        for code, name, type_, side in CHART
        if code not in existing
    )


class LedgerConfig(AppConfig):
    name = "ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        post_migrate.connect(ensure_chart, sender=self)
