"""OpenAPI description of the credits API's HMAC authentication, for drf-spectacular."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class HmacAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "credits.api.auth.HmacAuthentication"
    name = "ServiceHmac"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Signature",
            "description": (
                "v1=<hex HMAC-SHA256(secret, \"<X-Timestamp>.<METHOD>.<path>.<hex sha256(body)>\")>, with "
                "X-Service-Name and X-Timestamp (unix seconds, within 300 s); each signature is accepted once."
            ),
        }
