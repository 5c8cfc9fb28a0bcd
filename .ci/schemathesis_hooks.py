"""Schemathesis hooks: sign webhook requests the way the payment provider does, and send the
admin token on the admin routes and a buyer's token on the buyer routes.

The webhook's credential is an HMAC over the request body, so it is a custom auth provider:
`set` signs the exact bytes `requests` will send with the server's WEBHOOK_SECRET (passed in
SCHEMATHESIS_WEBHOOK_SECRET), and generated payment events get past verification to the parsing
and validation behind it. Schemathesis' own auth checks still send requests without it, which
must get 401.
"""

import hashlib
import hmac
import os
import time

import schemathesis
from requests.compat import json as requests_json


def _wire_bytes(body):
    # Mirrors schemathesis' JSON serializer and requests' `json=` encoding.
    if isinstance(body, bytes):
        return body
    if body is None:
        return b"null"
    text = requests_json.dumps(body, allow_nan=False)
    return text if isinstance(text, bytes) else text.encode("utf-8")


@schemathesis.auth().apply_to(path="/api/payments/webhook")
class WebhookSignature:
    def get(self, case, ctx):
        return os.environ["SCHEMATHESIS_WEBHOOK_SECRET"].encode()

    def set(self, case, secret, ctx):
        try:
            body = _wire_bytes(case.body)
        except (TypeError, ValueError):
            return  # not JSON-encodable (NaN): left unsigned, so 401
        timestamp = str(int(time.time()))
        digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        case.headers = {**(case.headers or {}), "X-Signature": f"t={timestamp},v1={digest}"}


class _Bearer:
    """A bearer token from the environment, as the route's credential."""

    variable = ""

    def get(self, case, ctx):
        return os.environ[self.variable]

    def set(self, case, token, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.auth().apply_to(path_regex="^/api/admin/")
class AdminToken(_Bearer):
    variable = "SCHEMATHESIS_ADMIN_TOKEN"


# The buyer routes: a token of one buyer's, made by `flash-sale-local token`, so the stateful
# phase reads and redeems the holds it made (another buyer's would be 404). A waiting room's
# queue is a buyer route too; its summary is public.
@schemathesis.auth().apply_to(path_regex="^/api/(holds|orders|products/[^/]+/queue$)")
class BuyerToken(_Bearer):
    variable = "SCHEMATHESIS_BUYER_TOKEN"
