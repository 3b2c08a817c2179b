#!/usr/bin/env bash
# Conformance: runs the public SCIM testers against a freshly started bridge.
#   scim2-tester (python-scim) through check_server(), every tag;
#   scim-sanity `probe` in strict mode.
# Prints `N passed, M failed` per tester; exits non-zero on any scim2-tester failure or skip
# and on any scim-sanity failure (its skips are the draft Agent resources, out of scope).
# Usage: conformance/run.sh [path/to/scim-bridge]   (default: target/release/scim-bridge, built if missing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${1:-$root/target/release/scim-bridge}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --release --locked)
fi

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import scim2_tester, scim_sanity" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
log="$data/bridge.log"
SCIM_BRIDGE_TOKEN="$token" "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data/store" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
base="http://127.0.0.1:$port/scim/v2"
status=0

echo "== scim2-tester against $base"
SCIM_TOKEN="$token" "$venv/bin/python" "$here/scim2_tester_run.py" "$base" || status=1

echo "== scim-sanity probe (strict) against $base"
sanity_out="$data/sanity.txt"
set +e
"$venv/bin/scim-sanity" probe "$base" --token "$token" --i-accept-side-effects >"$sanity_out" 2>&1
sanity_rc=$?
set -e
sed "s/$token/<token>/g" "$sanity_out"
# scim-sanity ends with e.g. "28 passed, 3 skipped, 31 total" ("N failed" appears only when N > 0).
# Its skips are the draft Agent/AgenticApplication resources, which a bridge does not serve.
totals="$(grep -E '^ *[0-9]+ passed' "$sanity_out" | tail -n 1 || true)"
s_passed="$(echo "$totals" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)"
s_failed="$(echo "$totals" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || echo 0)"
s_skipped="$(echo "$totals" | grep -Eo '[0-9]+ skipped' | grep -Eo '[0-9]+' || echo 0)"
echo "scim-sanity: ${s_passed:-0} passed, ${s_failed:-0} failed, ${s_skipped:-0} skipped"
if [ "$sanity_rc" -ne 0 ] || [ -z "$totals" ] || [ "${s_failed:-0}" -ne 0 ] || [ "${s_passed:-0}" -eq 0 ]; then status=1; fi

if [ "$status" -ne 0 ]; then
  echo "== bridge log (last 40 lines)"; tail -n 40 "$log" | sed "s/$token/<token>/g"
fi
exit "$status"
