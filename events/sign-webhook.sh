#!/usr/bin/env bash
# Prints a webhook event file with a fresh X-Signature (now, under $WEBHOOK_SECRET, by default
# the dev secret of [workspace.metadata.lambda.env]): a provider signs at send time, so a stored
# signature is stale after WEBHOOK_TOLERANCE_SECONDS.
#   cargo lambda invoke payment-webhook --invoke-address 127.0.0.1 \
#     --data-ascii "$(events/sign-webhook.sh events/payment-webhook.paid.json)"
set -euo pipefail
WEBHOOK_SECRET="${WEBHOOK_SECRET:-dev-webhook-secret}" python3 - "$1" <<'PY'
import hashlib, hmac, json, os, sys, time
event = json.load(open(sys.argv[1]))
t = int(time.time())
mac = hmac.new(os.environ["WEBHOOK_SECRET"].encode(), f"{t}.{event['body']}".encode(), hashlib.sha256)
event["headers"]["x-signature"] = f"t={t},v1={mac.hexdigest()}"
print(json.dumps(event))
PY
