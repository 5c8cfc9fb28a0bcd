#!/usr/bin/env bash
# Fuzzes the local server against openapi.yaml with Schemathesis: every check, valid and invalid
# requests, and stateful sequences along the spec's links, on a database of its own. Exits
# non-zero when Schemathesis finds anything: a 5xx, an undocumented status, a body, header or
# content type the spec does not allow, valid data refused or invalid data accepted.
#
# The admin routes get the real bearer token and the buyer routes a buyer's token (made by
# `flash-sale-local token`), so both are exercised past authentication. Webhook
# requests are signed over the bytes sent by .ci/schemathesis_hooks.py (a custom auth provider),
# so generated payment events reach the parsing and validation behind the signature check;
# Schemathesis' own auth checks send them unsigned, which must get 401.
#
# Needs python3 (with venv) and MariaDB/MySQL on 127.0.0.1:3306 for root without a password, as
# .ci/run sets up. SCHEMATHESIS_MAX_EXAMPLES (default 150) bounds the cases per operation and
# phase; SCHEMATHESIS_SEED replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-150}
target=${CARGO_TARGET_DIR:-target}
venv=$target/schemathesis-venv
mysql=(mysql --protocol=tcp -h 127.0.0.1 -P 3306 -u root)

log() { printf '\n==> %s\n' "$*"; }

log "schemathesis $SCHEMATHESIS_VERSION"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$venv/bin/schemathesis" --version

log "building flash-sale-local"
cargo build --quiet --bin flash-sale-local

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
database=flash_sale_schemathesis_$(random_hex 8)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin_token=$(random_hex 16)
webhook_secret=$(random_hex 16)
buyer_jwt_secret=$(random_hex 16)
base_url=http://127.0.0.1:$port
work=$(mktemp -d)
server_pid=

cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  "${mysql[@]}" -e "DROP DATABASE IF EXISTS \`$database\`" || echo "could not drop database $database" >&2
  rm -rf "$work"
}
trap cleanup EXIT

log "starting the local server on $base_url (database $database)"
DATABASE_URL="mysql://root@127.0.0.1:3306/$database" \
  LISTEN_ADDR="127.0.0.1:$port" \
  ADMIN_TOKEN="$admin_token" \
  WEBHOOK_SECRET="$webhook_secret" \
  BUYER_JWT_SECRET="$buyer_jwt_secret" \
  RUST_LOG=warn \
  AWS_LAMBDA_LOG_FORMAT=text \
  "$target/debug/flash-sale-local" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  curl -s -o /dev/null "$base_url/api/products/1" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "the server exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf -o /dev/null "$base_url/api/products/1" || {
  cat "$work/server.log" >&2
  echo "the server did not answer within 60 s" >&2
  exit 1
}

# A generated request may reuse an Idempotency-Key an earlier one used with another body: valid
# data, answered 422 idempotency_key_reused as documented, which the positive-data check does not
# expect of a schema-valid request unless told. The cache (failures replayed first by the next
# run) lives in target/, not in the work tree.
cat >"$work/schemathesis.toml" <<TOML
[cache]
directory = "$(cd "$target" && pwd)/schemathesis-cache"

[[operations]]
include-operation-id = "createHold"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# A sale window must end after it starts: a rule across two fields, which JSON Schema cannot
# say, so a schema-valid window that ends at or before its start is answered 400 as documented.
[[operations]]
include-operation-id = "createProduct"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "updateProduct"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# A waiting room's routes on a product that has none (product 1) or that does not exist, and a
# buyer not in its queue: valid requests answered 409 no_waiting_room and 404, as documented.
[[operations]]
include-operation-id = "joinQueue"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "getQueueEntry"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "getQueueSummary"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "404", "409", "429", "5xx"]

TOML

# Every check but use_after_free, which asks every read after a successful DELETE to be a 404.
# The API's one DELETE, releaseHold, gives a hold back: it becomes `released` and stays readable,
# as openapi.yaml documents, so a GET answering 200 with it is the contract. Only the command line
# can turn it off: `--checks all` re-enables what the config file disables, and the stateful
# phase (which chains DELETE then GET only now and then) ignores [[operations]] checks. A second
# DELETE in the API would need the check back.
#
# One worker: with two threads, Hypothesis's `ast.parse` of a lambda's source raced in CPython 3.11
# ("SystemError: AST constructor recursion depth mismatch", CPython gh-106905), which stopped the
# coverage phase with an error that is the interpreter's, not the API's.
log "schemathesis run openapi.yaml (all checks but use_after_free, at most $max_examples examples per operation and phase)"
status=0
PYTHONPATH="$PWD/.ci${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  SCHEMATHESIS_WEBHOOK_SECRET="$webhook_secret" \
  SCHEMATHESIS_ADMIN_TOKEN="$admin_token" \
  SCHEMATHESIS_BUYER_TOKEN="$(BUYER_JWT_SECRET="$buyer_jwt_secret" "$target/debug/flash-sale-local" token schemathesis-buyer)" \
  "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run openapi.yaml \
  --url "$base_url" \
  --checks all \
  --exclude-checks use_after_free \
  --max-examples "$max_examples" \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
  --request-timeout 10 \
  --generation-database none \
  --workers 1 \
  --no-color \
  2>&1 | tee "$work/schemathesis.log" || status=${PIPESTATUS[0]}

# The totals of its summary on one line.
tested=$(awk '$1 == "Tested:" { print $2; exit }' "$work/schemathesis.log")
cases=$(awk '/^Test cases:/ { getline; sub(/^ +/, ""); print; exit }' "$work/schemathesis.log")
echo "schemathesis totals: ${tested:-?} operations tested; test cases: ${cases:-?}"

if grep -q ERROR "$work/server.log"; then
  log "errors the server logged during the run (the last 20)"
  grep ERROR "$work/server.log" | tail -n 20
fi

if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures (exit $status)" >&2
  exit "$status"
fi
echo "schemathesis: no failures"
