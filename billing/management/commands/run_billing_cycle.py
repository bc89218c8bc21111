import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.services.cycle import billing_cycle_run


class Command(BaseCommand):
    help = "Do, as of --now (default: now), everything the scheduled jobs do. Running it twice for one moment changes nothing the second time."

    def add_arguments(self, parser):
        parser.add_argument("--now", help="ISO 8601 moment, e.g. 2026-12-01T00:00:00Z")

    def handle(self, *args, now=None, **options):
        moment = timezone.now()
        if now:
            moment = parse_datetime(now)
            if moment is None:
                raise CommandError("--now must be an ISO 8601 time")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
        self.stdout.write(json.dumps(billing_cycle_run(now=moment)))
