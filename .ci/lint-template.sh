#!/usr/bin/env bash
# Lints template.yaml, and edge-waf.yaml (the edge's web ACL, which template.yaml nests in
# us-east-1), as CloudFormation and as SAM, offline: cfn-lint (which translates the SAM resources
# and checks what they become) and `sam validate --lint`. Exits non-zero on any error or warning
# of either.
#
# Offline and without credentials: the tools run with dummy keys, no shared config, no instance
# metadata, and a proxy that refuses every connection, so nothing can reach AWS (a check that
# needed to would fail here instead of quietly calling out). Only the install talks to PyPI.
#
# Pins: cfn-lint 1.53.3, the last release that still translates SAM resources (later ones skip
# them and miss errors inside), and the aws-sam-cli release that accepts it. Both live in a venv
# under target/, reused while the versions match.
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.53.3
SAM_CLI_VERSION=1.170.0
venv=${CARGO_TARGET_DIR:-target}/sam-venv

log() { printf '\n==> %s\n' "$*"; }

if ! "$venv/bin/cfn-lint" --version 2>/dev/null | grep -qxF "cfn-lint $CFN_LINT_VERSION" ||
   ! "$venv/bin/sam" --version 2>/dev/null | grep -qF "version $SAM_CLI_VERSION"; then
  log "installing cfn-lint $CFN_LINT_VERSION and aws-sam-cli $SAM_CLI_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "aws-sam-cli==$SAM_CLI_VERSION"
fi

offline=(env -u AWS_PROFILE -u AWS_SESSION_TOKEN
  AWS_ACCESS_KEY_ID=offline-dummy AWS_SECRET_ACCESS_KEY=offline-dummy
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
  HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
  https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy=
  SAM_CLI_TELEMETRY=0)

for template in template.yaml edge-waf.yaml; do
  log "cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}') $template"
  # Exit status: 0 clean, 2 errors, 4 warnings (informational findings are not reported).
  "${offline[@]}" "$venv/bin/cfn-lint" "$template"
  echo "no errors, no warnings"

  log "sam validate --lint $template ($("$venv/bin/sam" --version))"
  output=$("${offline[@]}" "$venv/bin/sam" validate --lint --region us-east-1 --template-file "$template" 2>&1) || {
    printf '%s\n' "$output"
    exit 1
  }
  printf '%s\n' "$output"
  # Anything besides the verdict is a finding, whatever the exit status says.
  if printf '%s\n' "$output" | grep -v 'is a valid SAM Template' | grep -q '[^[:space:]]'; then
    echo "sam validate --lint reported findings on $template" >&2
    exit 1
  fi
done
