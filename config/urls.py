from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing.admin_dashboard import dashboard_view
from billing.api.errors import json_404
from billing.api.views.gateway_webhooks import stripe_webhook
from billing.admin_login import GuardedAdminLoginForm
from billing.api.views.health import healthz, readyz
from config.metrics import metrics_view

admin.site.login_form = GuardedAdminLoginForm  # refuses a username+address after repeated failures

urlpatterns = [
    # Before admin.site.urls, whose catch-all would answer it; admin_view lets staff only in.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    # Inbound gateway webhooks: no API key (the gateway's signature), no CSRF (the view is csrf_exempt).
    path("api/v1/pay/gateways/stripe/webhook", stripe_webhook, name="stripe-webhook"),
    path("api/v1/pay/", include("billing.api.urls")),
    path("api/v1/credits/", include("credits.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("portal/", include("portal.urls")),
    path("checkout/", include("portal.checkout")),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    # Anything else under /api/ is a JSON 404, in DEBUG too (handler404 is not used then).
    # csrf_exempt: the CSRF check would otherwise answer an unknown POST with an HTML 403.
    re_path(r"^api/", csrf_exempt(json_404)),
]

handler404 = "billing.api.errors.json_404"
handler500 = "billing.api.errors.json_500"
