"""Bearer API-key authentication and the secret/publishable permission."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from billing.api.throttling import count_auth_failure
from billing.models import ApiKey
from billing.services.api_keys import api_key_authenticate


class ApiPrincipal:
    """``request.user`` for a request made with an API key."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self):
        return f"api_key:{self.api_key.pk}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        key = None
        if scheme == self.keyword and raw_key.strip():
            key = api_key_authenticate(raw_key=raw_key.strip(), now=timezone.now())
        if key is None:
            # Unknown, revoked and malformed keys get the same answer (and the same count).
            count_auth_failure(request)
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return ApiPrincipal(key), key

    def authenticate_header(self, request):
        return self.keyword


class SecretKeyRequired(permissions.BasePermission):
    """Any key may call a view that sets ``publishable_allowed``; others need a secret key."""

    message = "This route needs a secret key (cp_sk_…)."

    def has_permission(self, request, view):
        key = request.auth
        if not isinstance(key, ApiKey):
            count_auth_failure(request)
            raise exceptions.NotAuthenticated("Missing API key: send Authorization: Bearer cp_sk_…")
        if key.type == ApiKey.Type.SECRET:
            return True
        return bool(getattr(view, "publishable_allowed", False))
