"""The staff console's sign-in, guarded against password guessing.

After ``ADMIN_LOGIN_MAX_FAILURES`` failed sign-ins for one username from one
address (``billing.client_address``: X-Forwarded-For behind ``TRUSTED_PROXY_COUNT``
proxies) within ``ADMIN_LOGIN_WINDOW_SECONDS``, that username is refused from
that address for ``ADMIN_LOGIN_LOCKOUT_SECONDS``, even with the right password
(the password is not even checked, so guessing goes no further). A successful
sign-in forgets the failures. Counts live in Django's cache: Redis when
``REDIS_URL`` is set (shared by every process), the process's memory otherwise.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError

from billing.client_address import client_address

logger = logging.getLogger("billing.admin")


def _keys(username: str, address: str) -> tuple[str, str]:
    who = hashlib.sha256(f"{username.strip().lower()}\x00{address}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"admin-login:failures:{who}", f"admin-login:locked:{who}"


def _minutes(seconds: int) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class GuardedAdminLoginForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "locked": (
            "Too many failed sign-ins for this username from your address. "
            "Sign-in is refused for %(wait)s; try again later."
        ),
    }

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request else ""
        failures_key, locked_key = _keys(username, address)
        if cache.get(locked_key):
            raise ValidationError(
                self.error_messages["locked"], code="locked",
                params={"wait": _minutes(settings.ADMIN_LOGIN_LOCKOUT_SECONDS)},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            self._failed(username, address, failures_key, locked_key)
            raise
        cache.delete_many([failures_key, locked_key])
        return cleaned

    @staticmethod
    def _failed(username: str, address: str, failures_key: str, locked_key: str) -> None:
        cache.add(failures_key, 0, timeout=settings.ADMIN_LOGIN_WINDOW_SECONDS)
        try:
            failures = cache.incr(failures_key)
        except ValueError:  # expired between add and incr
            cache.set(failures_key, 1, timeout=settings.ADMIN_LOGIN_WINDOW_SECONDS)
            failures = 1
        if failures >= settings.ADMIN_LOGIN_MAX_FAILURES:
            cache.set(locked_key, True, timeout=settings.ADMIN_LOGIN_LOCKOUT_SECONDS)
            cache.delete(failures_key)
            logger.warning(
                "admin sign-in locked for %s s after %s failures (username %r, address %s)",
                settings.ADMIN_LOGIN_LOCKOUT_SECONDS, failures, username[:150], address,
            )
