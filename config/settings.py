"""Settings: one file, every knob from the environment (django-environ).

With no environment at all the service runs embedded: SQLite in ``var/`` and a
Celery broker on the filesystem, so a new user needs nothing but Python. Set
``DATABASE_URL`` and ``REDIS_URL`` to run on PostgreSQL and Redis. Every
setting is listed in the README's configuration table.
"""

import re
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; absent by default

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    """A per-installation key kept in VAR_DIR, so no secret lives in the code."""
    path = VAR_DIR / "secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Browser origins that may call the publishable-key routes (check, ping, …) directly.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

# Production (PRODUCTION=1): DEBUG off and a real SECRET_KEY are required, and the SECURE_*
# settings below default to HTTPS only (each can still be set from the environment).
# `python manage.py check --deploy` passes with PRODUCTION=1 and SECRET_KEY set.
PRODUCTION = env.bool("PRODUCTION", default=False)
if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("PRODUCTION=1 with DEBUG=1: turn DEBUG off in production")
    _key = env.str("SECRET_KEY", default="")
    if len(_key) < 50 or len(set(_key)) < 5 or _key.startswith("django-insecure-"):
        raise ImproperlyConfigured("PRODUCTION=1 needs SECRET_KEY: a random value of 50 or more characters")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
# Load balancers check these over plain HTTP; Prometheus scrapes /metrics on the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=PRODUCTION)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=PRODUCTION)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=PRODUCTION)
# Behind a proxy that terminates TLS: trust its X-Forwarded-Proto (only if it always sets it).
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ledger",
    "billing",
    "credits",
    "portal",
    "rewards",
]

MIDDLEWARE = [
    "config.metrics.MetricsMiddleware",
    "billing.api.middleware.RequestIdMiddleware",
    "billing.api.cors.PublishableCorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "portal.security.PageSecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and IMMEDIATE transactions let the web server and the embedded
    # worker share the file without "database is locked" on every write.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Celery -----------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="billing"),
        }
    }
else:
    # Embedded broker: messages are files in VAR_DIR, no server needed.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
# The queue tasks go to by default (tests give each worker its own).
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# How often beat runs the billing cycle (renewals, resets, expiry, dunning).
BILLING_CYCLE_INTERVAL_SECONDS = env.float("BILLING_CYCLE_INTERVAL_SECONDS", default=60.0)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"

# --- Auth, i18n, static ---------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Messages (such as a new API key shown once in the admin) stay server-side.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True  # serve app static files without a collectstatic step

# --- API ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["billing.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["billing.api.auth.SecretKeyRequired"],
    "DEFAULT_PARSER_CLASSES": ["billing.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "billing.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["billing.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Billing and entitlements API",
    "DESCRIPTION": "Merchant API of the self-hosted billing service. See shared/API.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing.api.schema.add_error_responses",
    ],
}

# --- Billing --------------------------------------------------------------
BILLING_DEFAULT_CURRENCY = env.str("BILLING_DEFAULT_CURRENCY", default="usd").lower()
BILLING_CREDITS_FEATURE = env.str("BILLING_CREDITS_FEATURE", default="credits")

# Service credits API (/api/v1/credits/): the shared HMAC secrets, comma-separated; several may
# be active at once while a secret is rotated. Empty (the default): every request answers 401.
SVC_HMAC_SECRETS = env.list("SVC_HMAC_SECRETS", default=[])
SVC_HMAC_MIN_SECRET_LENGTH = 32
if any(len(secret) < SVC_HMAC_MIN_SECRET_LENGTH for secret in SVC_HMAC_SECRETS):
    raise ImproperlyConfigured(
        f"SVC_HMAC_SECRETS: every secret must be at least {SVC_HMAC_MIN_SECRET_LENGTH} characters long"
    )
# How old (or how far ahead) a signed request's X-Timestamp may be (API.md: 300 s); its
# signature is remembered for the window, so a replay within it is refused too.
SVC_HMAC_WINDOW_SECONDS = 300

# Payments. BILLING_GATEWAY: "test" (offline, the default) or "stripe".
BILLING_GATEWAY = env.str("BILLING_GATEWAY", default="test")
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
# Point the stripe library elsewhere (localstripe in the tests): e.g. http://127.0.0.1:8420
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Stripe.js in the customer's browser (the portal's card page with the Stripe gateway): the
# publishable key (pk_…) and where the script is loaded from (localstripe's fake in the tests).
# The page's Content-Security-Policy allows this script's origin and the API origin
# (STRIPE_API_BASE, else https://api.stripe.com).
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_JS_URL = env.str("STRIPE_JS_URL", default="https://js.stripe.com/v3/")
if not re.match(r"https?://[^/?#\s]+(/|$)", STRIPE_JS_URL):
    raise ImproperlyConfigured("STRIPE_JS_URL must be an absolute http(s) URL, such as https://js.stripe.com/v3/")
# Dunning: a failed renewal is retried this many days after the failure, then the next, …;
# after the last retry fails the invoice is uncollectible and the subscription lapses.
BILLING_DUNNING_RETRY_DAYS = env.list("BILLING_DUNNING_RETRY_DAYS", cast=int, default=[1, 3, 5])
BILLING_CHECKOUT_TTL_SECONDS = env.int("BILLING_CHECKOUT_TTL_SECONDS", default=24 * 3600)
BILLING_INVOICE_PREFIX = env.str("BILLING_INVOICE_PREFIX", default="INV")
# Pending refunds the gateway failed: the waits after failed attempt 1, 2, … (the last one repeats);
# after REFUND_MAX_ATTEMPTS failed attempts the cycle stops sending the refund, which stays pending
# (still owed) and is flagged for staff (refund.failed, the admin's "Retry now").
REFUND_RETRY_DELAYS_SECONDS = env.list(
    "REFUND_RETRY_DELAYS_SECONDS", cast=int, default=[300, 1800, 7200, 21600, 43200, 86400]
)
REFUND_MAX_ATTEMPTS = env.int("REFUND_MAX_ATTEMPTS", default=10)
if not REFUND_RETRY_DELAYS_SECONDS or min(REFUND_RETRY_DELAYS_SECONDS) <= 0 or REFUND_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured("REFUND_RETRY_DELAYS_SECONDS must be positive and REFUND_MAX_ATTEMPTS at least 1")
# Outgoing webhooks: the POST timeout; the waits after failed attempt 1, 2, … (then the delivery
# has failed; the default spans 27 h 36 m); how long an endpoint may fail before it is disabled;
# how often beat sweeps undispatched events and due deliveries.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_RETRY_DELAYS_SECONDS = env.list(
    "WEBHOOK_RETRY_DELAYS_SECONDS", cast=int, default=[30, 300, 1800, 7200, 18000, 36000, 36000]
)
WEBHOOK_DISABLE_AFTER_SECONDS = env.int("WEBHOOK_DISABLE_AFTER_SECONDS", default=3 * 24 * 3600)
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.float("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=15.0)
# Whether webhook URLs may point at non-public addresses (loopback, 10/8, 169.254/16, fc00::/7, …,
# "localhost"). Off under PRODUCTION=1, so a merchant's URL (or a leaked API key) cannot make the
# workers call internal services (SSRF; billing/net.py); on otherwise, so local development and the
# test suite deliver to receivers on 127.0.0.1. Set it explicitly on any deploy without PRODUCTION=1.
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=not PRODUCTION)
if any(delay <= 0 for delay in WEBHOOK_RETRY_DELAYS_SECONDS) or WEBHOOK_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("WEBHOOK_RETRY_DELAYS_SECONDS and WEBHOOK_TIMEOUT_SECONDS must be positive")
IDEMPOTENCY_TTL_SECONDS = env.int("IDEMPOTENCY_TTL_SECONDS", default=24 * 3600)
PORTAL_LINK_TTL_SECONDS = env.int("PORTAL_LINK_TTL_SECONDS", default=3600)

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# LOG_FORMAT: "json" (one object a line; the default in production) or "plain". Either way
# API keys, webhook secrets, signatures, portal tokens and card numbers are redacted (config/logs.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "plain")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "config.logs.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"()": "config.logs.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# Rate limits (429 RATE_LIMITED with Retry-After): a token bucket per API key on the merchant API
# and per X-Service-Name on the credits API, refilled at *_PER_SECOND up to *_BURST tokens. In Redis
# (shared by every process) when REDIS_URL is set, else per process; if Redis fails, the limiter
# counts per process and tries Redis again after RATE_LIMIT_REDIS_RETRY_SECONDS (fails open).
RATE_LIMIT_ENABLED = env.bool("RATE_LIMIT_ENABLED", default=True)
RATE_LIMIT_PER_SECOND = env.float("RATE_LIMIT_PER_SECOND", default=1000.0)
RATE_LIMIT_BURST = env.int("RATE_LIMIT_BURST", default=2000)
CREDITS_RATE_LIMIT_PER_SECOND = env.float("CREDITS_RATE_LIMIT_PER_SECOND", default=1000.0)
CREDITS_RATE_LIMIT_BURST = env.int("CREDITS_RATE_LIMIT_BURST", default=2000)
RATE_LIMIT_REDIS_TIMEOUT = env.float("RATE_LIMIT_REDIS_TIMEOUT", default=0.1)
RATE_LIMIT_REDIS_RETRY_SECONDS = env.float("RATE_LIMIT_REDIS_RETRY_SECONDS", default=5.0)
RATE_LIMIT_KEY_PREFIX = env.str("RATE_LIMIT_KEY_PREFIX", default="ratelimit:")
# Failed API-key authentications (401 on the merchant API) per client address: past this many in a
# minute, that address gets 429 RATE_LIMITED for any request without a valid key (valid keys keep
# working). Same buckets as above; 0 turns it off.
AUTH_FAILURE_LIMIT_PER_MINUTE = env.int("AUTH_FAILURE_LIMIT_PER_MINUTE", default=60)
if RATE_LIMIT_PER_SECOND <= 0 or CREDITS_RATE_LIMIT_PER_SECOND <= 0:
    raise ImproperlyConfigured("RATE_LIMIT_PER_SECOND and CREDITS_RATE_LIMIT_PER_SECOND must be positive")
if RATE_LIMIT_BURST < 1 or CREDITS_RATE_LIMIT_BURST < 1:
    raise ImproperlyConfigured("RATE_LIMIT_BURST and CREDITS_RATE_LIMIT_BURST must be at least 1")

# /metrics (Prometheus): with a token, a scrape must send Authorization: Bearer <token>.
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")

# Staff sign-in (/admin/login/): after this many failures for one username from one address
# within the window, that pair is refused for the lockout (counted in the cache).
ADMIN_LOGIN_MAX_FAILURES = env.int("ADMIN_LOGIN_MAX_FAILURES", default=5)
ADMIN_LOGIN_WINDOW_SECONDS = env.int("ADMIN_LOGIN_WINDOW_SECONDS", default=15 * 60)
ADMIN_LOGIN_LOCKOUT_SECONDS = env.int("ADMIN_LOGIN_LOCKOUT_SECONDS", default=15 * 60)

# How many reverse proxies stand in front of the app. 0: the client address is REMOTE_ADDR and
# X-Forwarded-For is ignored; n: it is X-Forwarded-For's n-th entry from the right (the right-most
# one no client can forge). Used by the admin sign-in guard and the failed-authentication limit.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0 or AUTH_FAILURE_LIMIT_PER_MINUTE < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT and AUTH_FAILURE_LIMIT_PER_MINUTE must be 0 or more")

API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
API_PAGE_SIZE_MAX = 100
