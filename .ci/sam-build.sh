#!/usr/bin/env bash
# `sam build` of template.yaml, as a deploy does it, then a look at what it made: every function's
# `bootstrap` must be an arm64 (aarch64) ELF executable, and its size is printed.
#
# Slow (every function is a release build with fat LTO, cross-compiled through cargo-lambda and
# zig: tens of minutes on 2 cores), so not part of .ci/run. Offline once the crates are fetched:
# the build runs with CARGO_NET_OFFLINE, dummy AWS credentials and AWS unreachable. The output
# goes to .aws-sam/ (build artifacts, not sources).
#
# Installs what it needs: aws-sam-cli, cargo-lambda and ziglang (pinned) into a venv under
# target/, and the aarch64-unknown-linux-gnu Rust target.
set -euo pipefail
cd "$(dirname "$0")/.."

SAM_CLI_VERSION=1.170.0
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.15.2
target=${CARGO_TARGET_DIR:-target}
# Absolute, so it can go on the PATH: a relative CARGO_TARGET_DIR is the repository root's.
case $target in /*) ;; *) target=$PWD/$target ;; esac
venv=$target/sam-venv
build_dir=.aws-sam/build

log() { printf '\n==> %s\n' "$*"; }

if ! "$venv/bin/sam" --version 2>/dev/null | grep -qF "version $SAM_CLI_VERSION" ||
   ! "$venv/bin/cargo-lambda" lambda --version 2>/dev/null | grep -qF "cargo-lambda $CARGO_LAMBDA_VERSION" ||
   ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qxF "$ZIGLANG_VERSION"; then
  log "installing aws-sam-cli $SAM_CLI_VERSION, cargo-lambda $CARGO_LAMBDA_VERSION, ziglang $ZIGLANG_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "aws-sam-cli==$SAM_CLI_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION"
fi
rustup target add aarch64-unknown-linux-gnu

log "fetching crates (the last step that may use the network)"
cargo fetch --locked

# cargo-lambda finds zig through the venv's python (python3 -m ziglang).
export PATH="$venv/bin:$PATH"
log "sam build ($(sam --version), $(cargo-lambda lambda --version), zig $(python3 -m ziglang version))"
started=$(date +%s)
env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
  AWS_ACCESS_KEY_ID=offline-dummy AWS_SECRET_ACCESS_KEY=offline-dummy \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
  SAM_CLI_TELEMETRY=0 CARGO_NET_OFFLINE=true \
  sam build --template-file template.yaml --build-dir "$build_dir"
echo "built in $(( ($(date +%s) - started) / 60 )) min"

log "artifacts"
functions=$(find functions -mindepth 2 -maxdepth 2 -name Cargo.toml | wc -l)
built=0
failed=0
printf '%-28s %12s %9s  %s\n' function bytes MB architecture
for bootstrap in "$build_dir"/*/bootstrap; do
  [ -f "$bootstrap" ] || continue
  name=$(basename "$(dirname "$bootstrap")")
  bytes=$(stat -c %s "$bootstrap")
  # ELF magic, 64-bit class, and e_machine (offset 18, little-endian) 0xb7 = EM_AARCH64.
  magic=$(od -An -tx1 -N5 "$bootstrap" | tr -d ' \n')
  machine=$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' \n')
  if [ "$magic" = 7f454c4602 ] && [ "$machine" = b700 ]; then
    arch="aarch64 ELF"
  else
    arch="NOT an aarch64 ELF (magic $magic, machine $machine)"
    failed=$((failed + 1))
  fi
  awk -v name="$name" -v bytes="$bytes" -v arch="$arch" \
    'BEGIN { printf "%-28s %12d %9.2f  %s\n", name, bytes, bytes / 1048576, arch }'
  built=$((built + 1))
done
if [ "$built" -ne "$functions" ] || [ "$failed" -ne 0 ]; then
  echo "expected $functions aarch64 bootstraps (one per crate in functions/), found $built, $failed wrong" >&2
  exit 1
fi
echo "$built functions, each an aarch64 bootstrap"
