from django.db import migrations, models
from django.utils import timezone


def pending_refunds_due_now(apps, schema_editor):
    """Refunds left pending before this migration were sent again on every cycle run;
    they start the new schedule due at once, with no attempt counted (how many were made
    is not known), so each gets the full REFUND_MAX_ATTEMPTS from here on."""
    Payment = apps.get_model("billing", "Payment")
    Payment.objects.filter(kind="refund", status="pending").update(next_attempt_at=timezone.now())


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0005_payment_refund_intent"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="payment",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="payment",
            index=models.Index(
                condition=models.Q(("kind", "refund"), ("status", "pending")),
                fields=["next_attempt_at"],
                name="payment_refund_retry_due",
            ),
        ),
        migrations.RunPython(pending_refunds_due_now, migrations.RunPython.noop),
    ]
