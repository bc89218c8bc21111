"""Log output: secrets redacted from every line, plain or JSON lines, and gunicorn's access log as JSON.

Nothing here imports Django, so gunicorn's master (config/gunicorn.py) can use it too.

``redact`` blanks what must never reach a log: API keys (``cp_sk_…``, ``cp_pk_…``),
webhook secrets (``whsec_…``), bearer credentials and ``Authorization`` values,
HMAC signatures (``v1=<64 hex>``), portal tokens (the path segment after
``/portal/``) and card numbers (13-19 digits passing the Luhn check, spaces or
dashes allowed). The formatters apply it to the whole formatted line, traceback
included; ``RedactSecretsFilter`` applies it to a record's message for handlers
with other formatters.
"""

from __future__ import annotations

import json
import logging
import re
import time

REDACTED = "[redacted]"

_PATTERNS = [
    (re.compile(r"\b(cp_(?:sk|pk)_)[A-Za-z0-9_\-]+"), r"\1" + REDACTED),
    (re.compile(r"\b(whsec_)[A-Za-z0-9_\-+/=]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\r\n]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(v1=)[0-9a-f]{64}\b"), r"\1" + REDACTED),
    (re.compile(r"(/portal/)[^/\s\"'?#]+"), r"\1" + REDACTED),
]
_CARD = re.compile(r"(?<![\d])\d(?:[ \-]?\d){12,18}(?![\d])")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"[ \-]", "", match.group(0))
    return REDACTED if _luhn(digits) else match.group(0)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _CARD.sub(_card, text)


class RedactSecretsFilter(logging.Filter):
    """Redacts the record's message (its arguments merged in) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the formatter to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the
    ``extra`` fields given to the call, and exc_info as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


try:  # gunicorn is a runtime dependency, but keep this module importable without it
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # pragma: no cover
    _GunicornLogger = object


class GunicornJsonLogger(_GunicornLogger):
    """gunicorn's logger with a JSON access log line per request: no headers but
    the user agent, the query string and referrer redacted like any log line."""

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        request_id = ""
        for name, value in resp.headers or ():
            if name.lower() == "x-request-id":
                request_id = value
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "type": "access",
            "remote": environ.get("REMOTE_ADDR", ""),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": request_id,
            "user_agent": environ.get("HTTP_USER_AGENT", ""),
            "referer": environ.get("HTTP_REFERER", ""),
        }
        try:
            self.access_log.info(redact(json.dumps(entry, ensure_ascii=False)))
        except Exception:
            self.exception("access log line failed")
