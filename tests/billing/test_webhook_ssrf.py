"""The outgoing webhooks' guard against server-side request forgery
(WEBHOOK_ALLOW_PRIVATE_URLS off): URLs whose host is a non-public IP literal or a
local name are refused when the endpoint is created, and a delivery connects only
to the public addresses its host resolved to, once.

DNS is outside the project, so names are given their answers by replacing
``socket.getaddrinfo``; the receiver is a real http.server on 127.0.0.1. No test
here may reach the internet: ``no_internet`` refuses any connection that is not
to this machine and records where each one went."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.apps import apps

from billing.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.services.webhooks import webhook_delivery_attempt, webhook_endpoint_create, webhook_events_dispatch
from tests.billing.test_webhooks import ROOT, T0, Receiver, customer_at
from tests.billing.test_webhooks import fresh_endpoint_cache, receiver  # noqa: F401 (fixtures)

PUBLIC = "93.184.216.34"  # a public address; no_internet makes sure nothing is sent to it


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Every outgoing connection's address; any not to 127.0.0.1 / ::1 is refused."""
    connects: list[tuple] = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        connects.append(address)
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"test: no connections off this machine ({address[0]})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return connects


@pytest.fixture
def resolver(monkeypatch):
    """Names in ``resolver.answers`` resolve to those addresses (a list, or a list of
    lists: one per lookup, the last repeating); others go to the real resolver.
    ``resolver.asked`` lists every name looked up."""
    real = socket.getaddrinfo

    class Resolver:
        answers: dict[str, list] = {}
        asked: list[str] = []

        def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
            self.asked.append(host)
            if host not in self.answers:
                return real(host, port, family, type, proto, flags)
            answer = self.answers[host]
            if answer and isinstance(answer[0], list):
                answer = answer[0] if len(answer) == 1 else answer.pop(0)
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)) if ":" in ip
                    else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answer]

    fake = Resolver()
    fake.answers, fake.asked = {}, []
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def row_counts() -> dict[str, int]:
    return {m._meta.label: m.objects.count() for m in apps.get_models()}


def one_delivery(url: str, settings, now=T0) -> tuple[WebhookEndpoint, str]:
    """An endpoint for ``url`` made while private URLs were allowed (before the guard,
    or on a deploy that allowed them), and one delivery to it."""
    allowed = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    endpoint, _ = webhook_endpoint_create(url=url, events=[], now=now)
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = allowed
    customer_at(f"customer-{WebhookEndpoint.objects.count()}", now)
    made = webhook_events_dispatch(now=now).deliveries  # also one for each earlier endpoint
    return endpoint, WebhookDelivery.objects.get(pk__in=made, endpoint=endpoint).pk


REFUSED_AT_CREATION = [
    # (url, what the reason names)
    ("http://127.0.0.1:6379/", "127.0.0.1 is a loopback address"),
    ("http://127.8.9.10/", "loopback"),
    ("http://[::1]:8000/hooks", "::1 is a loopback address"),
    ("http://10.0.0.5/hooks", "10.0.0.5 is a private address"),
    ("https://172.16.3.4/hooks", "private"),
    ("http://192.168.1.1/hooks", "private"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[fe80::1]/hooks", "link-local"),
    ("http://[fe80::1%25eth0]/hooks", "link-local"),
    ("http://[fc00::1]/hooks", "unique-local"),
    ("http://[fd12:3456::1]/hooks", "unique-local"),
    ("http://224.0.0.1/hooks", "multicast"),
    ("http://[ff02::1]/hooks", "multicast"),
    ("http://0.0.0.0:8000/hooks", "0.0.0.0 is an unspecified address"),
    ("http://[::]/hooks", "unspecified"),
    ("http://240.0.0.1/hooks", "reserved"),
    ("http://255.255.255.255/hooks", "reserved"),
    ("http://100.64.0.1/hooks", "shared"),
    ("http://198.51.100.7/hooks", "non-public"),
    ("http://[::ffff:127.0.0.1]/hooks", "loopback address (IPv4 127.0.0.1)"),
    ("http://[::ffff:10.0.0.5]/hooks", "private address (IPv4 10.0.0.5)"),
    ("http://[::ffff:169.254.169.254]/hooks", "link-local address (IPv4 169.254.169.254)"),
    ("http://[2002:7f00:1::]/hooks", "loopback"),  # 6to4 of 127.0.0.1
    ("http://[64:ff9b::a00:5]/hooks", "private"),  # NAT64 of 10.0.0.5
    ("http://2130706433/hooks", "2130706433 (127.0.0.1) is a loopback address"),
    ("http://0x7f.1/hooks", "loopback"),
    ("http://127.1/hooks", "loopback"),
    ("http://0177.0.0.1/hooks", "loopback"),
    ("http://127.0.0.1./hooks", "loopback"),
    ("http://localhost:8000/hooks", "localhost is a local host name"),
    ("http://LocalHost./hooks", "local host name"),
    ("http://api.localhost/hooks", "local host name"),
    ("http://metadata.google.internal/computeMetadata/v1/", "local host name"),
    ("http://printer.local/hooks", "local host name"),
    ("http://redis:6379/", "single-label host name"),
    ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/hooks", "local host name"),  # fullwidth "localhost"
    ("http://\uff11\uff12\uff17.0.0.1/hooks", "loopback"),  # fullwidth digits: the resolver is asked 127.0.0.1
]


@pytest.mark.django_db
class TestCreationRefused:
    @pytest.fixture(autouse=True)
    def guard_on(self, settings):
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = False

    @pytest.mark.parametrize("url, reason", REFUSED_AT_CREATION)
    def test_a_non_public_host_is_a_422_naming_url_and_the_reason_and_writes_nothing(self, sk_client, url, reason):
        before = row_counts()
        response = sk_client.post("/api/v1/pay/webhooks", {"url": url, "events": []}, format="json")
        assert response.status_code == 422, response.content
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        [detail] = error["details"]
        assert detail["field"] == "url"
        assert detail["message"].startswith("refused: ") and reason in detail["message"], detail
        assert error["message"] == f"url: {detail['message']}"
        assert row_counts() == before

    @pytest.mark.parametrize("url", [
        "https://hooks.merchant.example/cynco",
        "http://8.8.8.8/hooks",
        "https://[2001:4860:4860::8888]/hooks",
        "http://[::ffff:8.8.8.8]/hooks",
        "https://127.0.0.1.nip.io/hooks",  # a name: judged when a delivery resolves it
    ])
    def test_public_hosts_and_names_are_accepted_without_asking_dns(self, sk_client, url, resolver):
        response = sk_client.post("/api/v1/pay/webhooks", {"url": url}, format="json")
        assert response.status_code == 201, response.content
        assert WebhookEndpoint.objects.get().url == url
        assert urlsplit(url).hostname not in resolver.asked  # names are judged when a delivery resolves them

    def test_with_private_urls_allowed_a_loopback_url_is_accepted(self, sk_client, settings):
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
        response = sk_client.post("/api/v1/pay/webhooks", {"url": "http://127.0.0.1:9/hooks"}, format="json")
        assert response.status_code == 201, response.content


@pytest.mark.django_db
class TestDeliveryRefused:
    """Endpoints made while private URLs were allowed, delivered with the guard on."""

    @pytest.fixture(autouse=True)
    def guard_on(self, settings):
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = False

    def test_a_name_resolving_to_loopback_is_refused_and_recorded_as_a_failed_attempt(self, settings, receiver,
                                                                                      no_internet):
        port = receiver.server.server_address[1]
        endpoint, delivery_id = one_delivery(f"http://localhost:{port}/hooks", settings)  # the real resolver
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)

        assert (attempt.succeeded, attempt.status_code, attempt.number) == (False, None, 1)
        assert re.fullmatch(r"refused: localhost resolves to (127\.0\.0\.1|::1), a loopback address "
                            r"\(WEBHOOK_ALLOW_PRIVATE_URLS is off\)", attempt.error), attempt.error
        assert receiver.requests == [] and no_internet == []
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (
            WebhookDelivery.Status.PENDING, 1, T0 + timedelta(seconds=30))  # the normal retry schedule
        endpoint.refresh_from_db()
        assert endpoint.failing_since == T0

    def test_an_ip_literal_url_stored_before_the_guard_is_refused_at_delivery(self, settings, receiver, no_internet):
        endpoint, delivery_id = one_delivery(receiver.url, settings)  # http://127.0.0.1:<port>/hooks
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert attempt.error.startswith("refused: 127.0.0.1 is a loopback address"), attempt.error
        assert receiver.requests == [] and no_internet == []

    @pytest.mark.parametrize("answer, named", [
        (["10.0.0.5"], "10.0.0.5, a private address"),
        (["169.254.169.254"], "169.254.169.254, a link-local address"),
        (["fd00::5"], "fd00::5, a unique-local (private) address"),
        (["::ffff:127.0.0.1"], "::ffff:127.0.0.1, a loopback address (IPv4 127.0.0.1)"),
        ([PUBLIC, "127.0.0.1"], "127.0.0.1, a loopback address"),  # any one private answer is enough
    ])
    def test_a_name_with_any_non_public_answer_is_refused_before_connecting(self, settings, receiver, resolver,
                                                                          no_internet, answer, named):
        port = receiver.server.server_address[1]
        resolver.answers["hooks.merchant.example"] = answer
        _, delivery_id = one_delivery(f"http://hooks.merchant.example:{port}/hooks", settings)
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert attempt.succeeded is False, attempt.error
        assert attempt.error == (f"refused: hooks.merchant.example resolves to {named} "
                                 "(WEBHOOK_ALLOW_PRIVATE_URLS is off)")
        assert receiver.requests == [] and no_internet == []  # not even the public answer was tried

    def test_https_is_refused_the_same_way_before_any_handshake(self, settings, receiver, resolver, no_internet):
        port = receiver.server.server_address[1]
        resolver.answers["secure.merchant.example"] = ["127.0.0.1"]
        _, delivery_id = one_delivery(f"https://secure.merchant.example:{port}/hooks", settings)
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert attempt.error.startswith("refused: secure.merchant.example resolves to 127.0.0.1"), attempt.error
        assert no_internet == []

    def test_the_name_is_resolved_once_and_the_connection_goes_to_the_vetted_answer(self, settings, receiver,
                                                                                    resolver, no_internet):
        """DNS rebinding: the first answer is public, every later one is the receiver
        on 127.0.0.1. The guard must connect to what it checked, not ask again."""
        port = receiver.server.server_address[1]
        resolver.answers["rebind.merchant.example"] = [[PUBLIC], ["127.0.0.1"]]
        _, delivery_id = one_delivery(f"http://rebind.merchant.example:{port}/hooks", settings)
        resolver.asked.clear()
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)

        assert receiver.requests == []  # the rebound answer was never used
        assert resolver.asked == ["rebind.merchant.example"]
        assert no_internet == [(PUBLIC, port)]  # refused by no_internet: nothing left this machine
        assert attempt.succeeded is False and "no connections off this machine" in attempt.error, attempt.error

    def test_refusals_follow_the_retry_schedule_until_failed_and_disable_the_endpoint(self, settings, receiver):
        delays = list(settings.WEBHOOK_RETRY_DELAYS_SECONDS)
        settings.WEBHOOK_DISABLE_AFTER_SECONDS = sum(delays)  # reached at the last attempt
        endpoint, delivery_id = one_delivery(receiver.url, settings)
        now = T0
        for number in range(1, len(delays) + 2):
            attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=now)
            assert attempt.number == number and attempt.error.startswith("refused: 127.0.0.1")
            if number <= len(delays):
                now += timedelta(seconds=delays[number - 1])

        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.FAILED, len(delays) + 1)
        assert WebhookAttempt.objects.filter(delivery_id=delivery_id, succeeded=False).count() == len(delays) + 1
        endpoint.refresh_from_db()
        assert endpoint.status == WebhookEndpoint.Status.DISABLED
        assert receiver.requests == []

    def test_through_a_proxy_the_target_is_vetted_and_the_proxy_itself_is_not(self, settings, receiver, resolver,
                                                                             monkeypatch):
        """HTTP_PROXY is the operator's (here the receiver plays it, on 127.0.0.1):
        a public target goes through it; a private one is refused before it."""
        for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{receiver.server.server_address[1]}")
        resolver.answers["shop.merchant.example"] = [PUBLIC]
        resolver.answers["inside.merchant.example"] = ["10.1.2.3"]
        _, public_id = one_delivery("http://shop.merchant.example/hooks", settings)
        _, private_id = one_delivery("http://inside.merchant.example/hooks", settings)

        assert webhook_delivery_attempt(delivery_id=public_id, now=T0).succeeded
        refused = webhook_delivery_attempt(delivery_id=private_id, now=T0)
        assert refused.error.startswith("refused: inside.merchant.example resolves to 10.1.2.3"), refused.error
        [request] = receiver.requests
        assert request["headers"]["Host"] == "shop.merchant.example"


@pytest.mark.django_db
class TestPrivateAllowed:
    def test_with_the_setting_on_a_local_receiver_gets_the_delivery(self, settings, receiver, resolver):
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
        port = receiver.server.server_address[1]
        resolver.answers["dev.merchant.example"] = ["127.0.0.1"]
        _, literal_id = one_delivery(receiver.url, settings)
        _, named_id = one_delivery(f"http://dev.merchant.example:{port}/hooks", settings)
        assert webhook_delivery_attempt(delivery_id=literal_id, now=T0).succeeded
        assert webhook_delivery_attempt(delivery_id=named_id, now=T0).succeeded
        hosts = [r["headers"]["Host"] for r in receiver.requests]
        assert hosts == [f"127.0.0.1:{port}", f"dev.merchant.example:{port}"]


class TestDefault:
    """PRODUCTION=1 turns the guard on unless WEBHOOK_ALLOW_PRIVATE_URLS says otherwise."""

    @pytest.mark.parametrize("extra, allowed", [
        ({}, True),
        ({"PRODUCTION": "1", "SECRET_KEY": "k" * 10 + os.urandom(24).hex()}, False),
        ({"PRODUCTION": "1", "SECRET_KEY": "k" * 10 + os.urandom(24).hex(), "WEBHOOK_ALLOW_PRIVATE_URLS": "1"}, True),
        ({"WEBHOOK_ALLOW_PRIVATE_URLS": "0"}, False),
    ])
    def test_the_default_follows_production(self, tmp_path, extra, allowed):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST", "DJANGO_SETTINGS", "PRODUCTION", "WEBHOOK_ALLOW_PRIVATE_URLS"))}
        env.update(DJANGO_SETTINGS_MODULE="config.settings", VAR_DIR=str(tmp_path / "var"), DEBUG="0", **extra)
        code = ("import django, json; django.setup(); from django.conf import settings; "
                "print(json.dumps(settings.WEBHOOK_ALLOW_PRIVATE_URLS))")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) is allowed
