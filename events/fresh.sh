#!/usr/bin/env bash
# Prints a sample event as it would be sent now: a webhook request re-signed (now, under
# $WEBHOOK_SECRET, by default the dev secret of [workspace.metadata.lambda.env]: a provider signs
# at send time, so a stored signature is stale after WEBHOOK_TOLERANCE_SECONDS), SQS messages
# stamped as received now; and, given an order id, naming that order instead of the sample's
# (which exists nowhere, so the event would be retried and finally dead-lettered).
#   cargo lambda invoke payment-webhook --invoke-address 127.0.0.1 \
#     --data-ascii "$(events/fresh.sh events/payment-webhook.paid.json "$ORDER_ID")"
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: events/fresh.sh <event file> [order id]" >&2; exit 2; }
WEBHOOK_SECRET="${WEBHOOK_SECRET:-dev-webhook-secret}" python3 - "$@" <<'PY'
import hashlib, hmac, json, os, sys, time
from datetime import datetime, timezone
event = json.load(open(sys.argv[1]))
order_id = sys.argv[2] if len(sys.argv) > 2 else None
now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

def fresh(body, stamp):
    try:
        payload = json.loads(body)
    except ValueError:
        return body  # the poison message stays as it is
    if order_id:
        payload["order_id"] = order_id
    if stamp:
        payload["received_at"] = now
    return json.dumps(payload, separators=(",", ":"))

if "Records" in event:
    for record in event["Records"]:
        record["body"] = fresh(record["body"], stamp=True)
        if order_id and "MessageGroupId" in record.get("attributes", {}):
            record["attributes"]["MessageGroupId"] = order_id
else:
    event["body"] = fresh(event["body"], stamp=False)
    t = int(time.time())
    mac = hmac.new(os.environ["WEBHOOK_SECRET"].encode(), f"{t}.{event['body']}".encode(), hashlib.sha256)
    event["headers"]["x-signature"] = f"t={t},v1={mac.hexdigest()}"
print(json.dumps(event))
PY
