"""Request ids: every request gets one (or keeps a sane incoming X-Request-Id)."""

import re
import uuid

_INCOMING_RE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-Id", "")
        request.request_id = incoming if _INCOMING_RE.match(incoming) else "req_" + uuid.uuid4().hex
        response = self.get_response(request)
        response["X-Request-Id"] = request.request_id
        return response
