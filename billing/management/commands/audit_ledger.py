from django.core.management.base import BaseCommand, CommandError

from billing.selectors.audit_ledger import audit_ledger


class Command(BaseCommand):
    help = (
        "Check the whole database, read-only: ledger entries balance, balances agree with their buckets and "
        "locks, locks are in one state, each usage key, credit debit and gateway event took effect once, and "
        "invoices, payments and the ledger agree. Prints one line per violation and exits 1 if there is any; "
        "prints one 'clean' line and exits 0 otherwise."
    )

    def handle(self, *args, **options):
        report = audit_ledger()
        for violation in report.violations:
            self.stdout.write(f"VIOLATION {violation}")
        counts = ", ".join(f"{n} {label}" for label, n in report.counts.items())
        if report.violations:
            raise CommandError(f"audit_ledger: {len(report.violations)} violation(s) (checked {counts})")
        self.stdout.write(f"audit_ledger: clean (checked {counts})")
