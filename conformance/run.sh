#!/usr/bin/env bash
# Conformance: runs the public SCIM testers against freshly started bridges.
#   scim2-tester (python-scim) through check_server(), every tag;
#   scim-sanity `probe` in strict mode.
# Tenants, one after the other, each on its own bridge (and simulator) with an empty store:
#   local           the embedded default (local connector), at /scim/v2;
#   sisense-rest    a Sisense tenant (REST mode) on `scim-bridge simulate sisense`;
#   sisense-scim    the same with mode = "scim" (Sisense's native SCIM API for users and groups);
#   tableau         a Tableau Server tenant (personal access token) on `scim-bridge simulate tableau`;
#   thoughtspot     a ThoughtSpot tenant (trusted-auth secret key, Primary Org) on
#                   `scim-bridge simulate thoughtspot` (its 100 req/s limit on: the bridge stays under it);
#   metabase        a Metabase tenant (the simulator's API key, `x-api-key`) on `scim-bridge simulate metabase`.
# A vendor tenant's bridge is tested once it has read its simulator (the detailed `/readyz` of its
# admin listener with no vendor unavailable); after its testers, its outbox must drain with no
# vendor refusal or failure (its admin listener's `/metrics`). Every bridge's admin listener is on
# a free port of its own, never the default 127.0.0.1:9090.
# Prints `N passed, M failed` per tester per tenant, then a summary; exits non-zero on any
# scim2-tester failure or skip, on any scim-sanity failure (its skips are the draft Agent
# resources, out of scope) and on any undelivered or refused vendor write. The bearer token is
# random per run and never printed.
# Usage: conformance/run.sh [path/to/scim-bridge]   (default: target/release/scim-bridge, built if missing)
#        conformance/run.sh TENANT...                e.g. `conformance/run.sh thoughtspot` (same as
#                                                     CONFORMANCE_TENANTS=thoughtspot), default binary
# Env:   CONFORMANCE_TENANTS="local sisense-rest sisense-scim tableau thoughtspot metabase" (default: all six) to run
#        fewer, e.g. CONFORMANCE_TENANTS=thoughtspot;
#        SCIM_TESTER_TRACE=1 to print scim2-tester's requests and responses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
known_tenants=" local sisense-rest sisense-scim tableau thoughtspot metabase "
bin="$root/target/release/scim-bridge"
if [ $# -gt 0 ] && [[ "$known_tenants" == *" $1 "* ]]; then
  CONFORMANCE_TENANTS="$*"
elif [ $# -gt 0 ]; then
  bin="$1"
fi
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --release --locked --bin scim-bridge)
fi
tenants="${CONFORMANCE_TENANTS:-local sisense-rest sisense-scim tableau thoughtspot metabase}"

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import scim2_tester, scim_sanity" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

data="$(mktemp -d)"
token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
redact() { sed "s/$token/<token>/g"; }
# stop PID...: ends processes of one tenant's run (the next starts from nothing) and forgets them.
stop() {
  local p q keep
  for p in "$@"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    keep=()
    for q in "${pids[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    pids=("${keep[@]}")
  done
}
# wait_for URL SECONDS: until URL answers 2xx.
wait_for() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
# wait_vendors_read ADMIN_PORT SECONDS: until the admin listener's detailed /readyz is 200 with an
# empty `vendors_unavailable` (every tenant's vendor reached and read once).
wait_vendors_read() {
  local i body
  for i in $(seq 1 $(($2 * 10))); do
    if body="$(curl -fsS "http://127.0.0.1:$1/readyz" 2>/dev/null)" &&
      echo "$body" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("vendors_unavailable") == {} else 1)'; then
      return 0
    fi
    sleep 0.1
  done
  echo "not ready after $2 s: ${body:-no answer}"
  return 1
}

status=0
summary=()

# run_testers NAME BASE_URL: both testers against one tenant; adds its lines to the summary.
run_testers() {
  local name="$1" base="$2" out rc line totals s_passed s_failed s_skipped ok=0
  echo "== [$name] scim2-tester against $base"
  out="$data/$name-scim2-tester.txt"
  set +e
  SCIM_TOKEN="$token" "$venv/bin/python" "$here/scim2_tester_run.py" "$base" >"$out" 2>&1
  rc=$?
  set -e
  redact <"$out"
  line="$(grep -E '^scim2-tester: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1 || true)"
  [ -n "$line" ] || line="scim2-tester: did not finish (exit $rc)"
  summary+=("$(printf '%-13s %s' "$name" "$line")")
  [ "$rc" -eq 0 ] || ok=1

  echo "== [$name] scim-sanity probe (strict) against $base"
  out="$data/$name-sanity.txt"
  set +e
  "$venv/bin/scim-sanity" probe "$base" --token "$token" --i-accept-side-effects >"$out" 2>&1
  rc=$?
  set -e
  redact <"$out"
  # scim-sanity ends with e.g. "28 passed, 3 skipped, 31 total" ("N failed" appears only when N > 0).
  # Its skips are the draft Agent/AgenticApplication resources, which a bridge does not serve.
  totals="$(grep -E '^ *[0-9]+ passed' "$out" | tail -n 1 || true)"
  s_passed="$(echo "$totals" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)"
  s_failed="$(echo "$totals" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || echo 0)"
  s_skipped="$(echo "$totals" | grep -Eo '[0-9]+ skipped' | grep -Eo '[0-9]+' || echo 0)"
  line="scim-sanity: ${s_passed:-0} passed, ${s_failed:-0} failed, ${s_skipped:-0} skipped"
  [ -n "$totals" ] || line="scim-sanity: did not finish (exit $rc)"
  echo "$line"
  summary+=("$(printf '%-13s %s' "$name" "$line")")
  if [ "$rc" -ne 0 ] || [ -z "$totals" ] || [ "${s_failed:-0}" -ne 0 ] || [ "${s_passed:-0}" -eq 0 ]; then ok=1; fi
  return "$ok"
}

# check_vendor NAME ADMIN_PORT: after the testers, every write must have reached the vendor and
# been accepted (the bridge answers the IdP before delivery, so the testers alone cannot see a
# vendor refusal). Waits up to 15 s for the outbox to drain, then reads the admin listener's
# /metrics.
check_vendor() {
  local name="$1" admin_port="$2" i counts line d r f p
  for i in $(seq 1 150); do
    counts="$(curl -fsS "http://127.0.0.1:$admin_port/metrics" 2>/dev/null | python3 -c '
import re, sys
v = {"delivered": 0, "refused": 0, "failed": 0, "pending": 0}
for l in sys.stdin:
    m = re.match(r"scim_vendor_deliveries_total\{outcome=\"(delivered|refused)\",[^}]*\} (\S+)", l) or \
        re.match(r"scim_outbox_depth\{state=\"(failed|pending)\",[^}]*\} (\S+)", l)
    if m:
        v[m.group(1)] += int(float(m.group(2)))
print(v["delivered"], v["refused"], v["failed"], v["pending"])
' || true)"
    [ -n "$counts" ] && [ "$(echo "$counts" | cut -d' ' -f4)" = 0 ] && break
    sleep 0.1
  done
  read -r d r f p <<<"${counts:-0 0 0 0}"
  line="vendor: $d delivered, $r refused, $f failed, $p pending"
  echo "== [$name] $line"
  summary+=("$(printf '%-13s %s' "$name" "$line")")
  [ -n "$counts" ] && [ "$d" -gt 0 ] && [ "$r" -eq 0 ] && [ "$f" -eq 0 ] && [ "$p" -eq 0 ]
}

# show_logs FILE...: the last lines of each log, after a failure.
show_logs() {
  local f
  for f in "$@"; do
    echo "== $(basename "$f") (last 40 lines)"
    tail -n 40 "$f" | sed 's/\x1b\[[0-9;]*m//g' | redact
  done
}

run_local() {
  local port admin_port log pid
  port="$(free_port)"
  admin_port="$(free_port)"
  log="$data/local-bridge.log"
  SCIM_BRIDGE_TOKEN="$token" "$bin" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
    --data-dir "$data/local-store" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  if ! wait_for "http://127.0.0.1:$port/healthz" 10; then
    echo "[local] bridge did not start"
    summary+=("$(printf '%-13s %s' local "bridge did not start")")
    show_logs "$log"
    stop "$pid"
    return 1
  fi
  if ! run_testers local "http://127.0.0.1:$port/scim/v2"; then
    show_logs "$log"
    stop "$pid"
    return 1
  fi
  stop "$pid"
}

# run_vendor NAME VENDOR VENDOR_KEYS ROLES: a simulator of VENDOR (`scim-bridge simulate VENDOR`,
# its defaults), a bridge with one tenant NAME over it (VENDOR_KEYS: the [tenants.vendor] keys
# after kind and base_url; ROLES: the body of [tenants.roles]), the testers, the outbox check.
run_vendor() {
  local name="$1" vendor="$2" keys="$3" roles="$4" simport port admin_port simlog log cfg simpid pid
  simport="$(free_port)"
  port="$(free_port)"
  admin_port="$(free_port)"
  simlog="$data/$name-simulator.log"
  log="$data/$name-bridge.log"
  cfg="$data/$name.toml"
  "$bin" simulate "$vendor" --listen "127.0.0.1:$simport" >"$simlog" 2>&1 &
  simpid=$!
  pids+=("$simpid")
  cat >"$cfg" <<EOF
listen   = "127.0.0.1:$port"
data_dir = "$data/$name-store"

[admin]
listen = "127.0.0.1:$admin_port"

[[tenants]]
id     = "$name"
tokens = ["\${CONFORMANCE_TOKEN}"]

[tenants.vendor]
kind        = "$vendor"
base_url    = "http://127.0.0.1:$simport/"
$keys

[tenants.roles]
$roles
EOF
  if ! wait_for "http://127.0.0.1:$simport/__sim/stats" 10; then
    echo "[$name] $vendor simulator did not start"
    summary+=("$(printf '%-13s %s' "$name" "$vendor simulator did not start")")
    show_logs "$simlog"
    stop "$simpid"
    return 1
  fi
  CONFORMANCE_TOKEN="$token" "$bin" serve --config "$cfg" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  if ! wait_for "http://127.0.0.1:$port/healthz" 10 || ! wait_vendors_read "$admin_port" 30; then
    echo "[$name] bridge not ready"
    summary+=("$(printf '%-13s %s' "$name" "bridge not ready (vendor not read)")")
    show_logs "$log" "$simlog"
    stop "$pid" "$simpid"
    return 1
  fi
  local ok=0
  run_testers "$name" "http://127.0.0.1:$port/tenants/$name/scim/v2" || ok=1
  check_vendor "$name" "$admin_port" || ok=1
  if [ "$ok" -ne 0 ]; then
    show_logs "$log" "$simlog"
    stop "$pid" "$simpid"
    return 1
  fi
  stop "$pid" "$simpid"
}

# run_sisense NAME MODE: a Sisense tenant (REST, or mode = "scim") signed in as the simulator's
# admin; BI Admins → Admin, default Viewer.
run_sisense() {
  local keys=$'username    = "admin@sisense.local"\npassword    = "admin"'
  if [ "$2" = scim ]; then
    # The simulator's native SCIM token (its default); roles still go over REST as the admin.
    keys+=$'\nmode        = "scim"\nscim_token  = "simulator-scim-token"'
  fi
  run_vendor "$1" sisense "$keys" \
    $'default = "Viewer"\nrules = [\n  { group = "BI Admins", role = "Admin" },\n]'
}

# run_tableau NAME: a Tableau Server tenant on the simulator's default site, signed in with its
# default personal access token; the demo's rules (BI Admins → SiteAdministratorCreator,
# Tableau Creators → Creator, default Viewer); deprovisioning unlicenses (the default).
run_tableau() {
  run_vendor "$1" tableau \
    $'site        = "default"\npat_name    = "scim-bridge"\npat_secret  = "simulator-pat-secret"\nflavor      = "server"' \
    $'default = "Viewer"\nrules = [\n  { group = "BI Admins", role = "SiteAdministratorCreator" },\n  { group = "Tableau Creators", role = "Creator" },\n]'
}

# run_thoughtspot NAME: a ThoughtSpot tenant in the simulator's Primary Org (org_id = 0), signed in
# as its administrator `tsadmin` with the default trusted-auth secret key; roles are RBAC roles
# held through the bridge's role groups (BI Admins → Analyst, default Viewer, both seeded roles),
# as in deploy/scim-bridge.example.toml.
run_thoughtspot() {
  run_vendor "$1" thoughtspot \
    $'username    = "tsadmin"\nsecret_key  = "simulator-secret-key"\norg_id      = 0' \
    $'default = "Viewer"\nrules = [\n  { group = "BI Admins", role = "Analyst" },\n]'
}

# run_metabase NAME: a Metabase tenant signed in with the simulator's default API key (bound to
# its Administrators group). Roles are Metabase permission groups: BI Admins → Administrators
# (Metabase's admin group, so nothing has to be created in the simulator first: the bridge never
# creates a rule's group) and no default, so users no rule covers are in no role group.
run_metabase() {
  run_vendor "$1" metabase \
    $'api_key     = "mb_simulator_api_key"' \
    $'rules = [\n  { group = "BI Admins", role = "Administrators" },\n]'
}

for t in $tenants; do
  case "$t" in
    local) run_local || status=1 ;;
    sisense-rest) run_sisense sisense-rest rest || status=1 ;;
    sisense-scim) run_sisense sisense-scim scim || status=1 ;;
    tableau) run_tableau tableau || status=1 ;;
    thoughtspot) run_thoughtspot thoughtspot || status=1 ;;
    metabase) run_metabase metabase || status=1 ;;
    *) echo "unknown tenant in CONFORMANCE_TENANTS: $t"; status=1 ;;
  esac
done

echo "== summary"
for line in "${summary[@]}"; do echo "$line"; done
if [ "$status" -eq 0 ]; then echo "conformance: all passed"; else echo "conformance: FAILED"; fi
exit "$status"
