from django.core.management.base import BaseCommand
from django.utils import timezone

from billing.models import ApiKey
from billing.services.api_keys import api_key_create
from billing.services.audit import audit_record


class Command(BaseCommand):
    help = "Create an API key and print the raw key (shown only now) on the last line of stdout."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--type", choices=[t.value for t in ApiKey.Type], default="secret")

    def handle(self, *args, name, type, **options):
        now = timezone.now()
        key, raw_key = api_key_create(name=name, type=type, now=now)
        audit_record(actor_type="system", actor_id="createapikey", action="api_key.create",
                     target_type="api_key", target_id=key.pk, now=now)
        self.stderr.write(f"Created {type} key {key.pk} ({key.masked_key}). The raw key is shown only once:")
        self.stdout.write(raw_key)
