#!/usr/bin/env bash
# Many tenants in one process (issue 14). Two runs, each measured the same way:
#   1. TENANTS local tenants with USERS users each (written straight into the store);
#   2. TENANTS tenants on the four vendor simulators (a quarter each), signed in, roles loaded and
#      the vendor directory observed for every tenant.
# For each: start-up to the public /readyz 200 and to the admin /readyz 200 (every tenant's
# vendor ready); resident memory; CPU used while idle over IDLE_S seconds. For run 1 also: filter
# lookups (wrk, 16 connections, 20 s) on one tenant, then spread over all tenants, side by side.
# Usage: scripts/bench-tenants.sh [TENANTS=1000] [USERS=100] [IDLE_S=60]
# (BENCH_NO_BUILD=1 uses the release binaries as they are.)
# Loopback only; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS="${1:-1000}"
USERS="${2:-100}"
IDLE_S="${3:-60}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# Quiet, but a failed build shows why (set -e stops the run).
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --quiet --bin scim-bridge --example bench_seed
bin=target/release/scim-bridge
seed=target/release/examples/bench_seed
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
token=bench-token-0123456789abcdefghijklmnopqrstuvwxyz
admin_token=bench-admin-token-0123456789abcdefghijklmnop
port=18281
admin_port=18282
clk=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

# Starts the bridge on $1 (config); prints the seconds to the public and to the admin /readyz 200.
start_bridge() {
  local start; start=$(date +%s.%N)
  SCIM_BRIDGE_ADMIN_TOKEN=$admin_token RUST_LOG=warn $bin serve --config "$1" \
    --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port >"$work/log" 2>&1 &
  pid=$!; pids+=("$pid")
  local deadline=$((SECONDS + 300))
  until curl -fs http://127.0.0.1:$port/readyz >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "no /readyz in 300 s"; tail "$work/log"; exit 1; }
    sleep 0.01
  done
  local public; public=$(echo "$(date +%s.%N) - $start" | bc)
  # The detailed readiness lists the tenants whose vendor is not signed in yet.
  until curl -fs http://127.0.0.1:$admin_port/readyz 2>/dev/null \
      | python3 -c 'import json,sys; sys.exit(0 if not json.load(sys.stdin)["vendors_unavailable"] else 1)' 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "tenants still unavailable after 300 s"; curl -s http://127.0.0.1:$admin_port/readyz | head -c 600; exit 1; }
    sleep 0.2
  done
  echo "start-up: public /readyz 200 after ${public} s, every tenant's vendor ready (admin /readyz) after $(echo "$(date +%s.%N) - $start" | bc) s"
}

# The machine's load goes with every figure: the bridge shares its cores with whatever else runs.
load() { echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

idle() {
  load
  local before; before=$(cpu_ticks "$pid")
  sleep "$IDLE_S"
  local after; after=$(cpu_ticks "$pid")
  echo "idle: $(echo "scale=2; 100 * ($after - $before) / $clk / $IDLE_S" | bc) % of one core over ${IDLE_S} s; RSS $(rss_mb "$pid") MB"
  load
}

load
echo "== 1. $TENANTS local tenants x $USERS users"
$seed tenants --data-dir "$work/d1" --tenants "$TENANTS" --users "$USERS" --token "$token" \
  --config "$work/local.toml" --out "$work/names.tsv"
printf '\n[admin]\ntokens = ["${SCIM_BRIDGE_ADMIN_TOKEN}"]\n' >>"$work/local.toml"
start_bridge "$work/local.toml"
echo "RSS after start-up: $(rss_mb "$pid") MB"
idle
# One wrk script for both runs, so that wrk (which shares the 2 cores with the bridge) does the
# same work per request and only the bridge's cost differs: the rows it draws from differ, not
# their number. one.tsv repeats t0000's users up to the length of all.tsv.
cp "$work/names.tsv" "$work/all.tsv"
rows=$(wc -l <"$work/all.tsv")
grep -P '^t0000\t' "$work/names.tsv" >"$work/t0.tsv"
: >"$work/one.tsv"
while [ "$(wc -l <"$work/one.tsv")" -lt "$rows" ]; do cat "$work/t0.tsv" >>"$work/one.tsv"; done
for s in one all; do
  cat >"$work/$s.lua" <<LUA
local rows = {}
for line in io.lines("$work/$s.tsv") do
  local t, n = line:match("^([^\t]+)\t(.+)$")
  rows[#rows+1] = {t, n}
end
math.randomseed(42)
request = function()
  local r = rows[math.random(#rows)]
  return wrk.format("GET", "/tenants/" .. r[1] .. "/scim/v2/Users?filter=userName%20eq%20%22" .. r[2] .. "%22", {["Authorization"]="Bearer $token-" .. r[1]})
end
LUA
done
lookups() {
  load
  echo "-- filter lookups, one tenant"
  wrk -t2 -c16 -d20s --latency -s "$work/one.lua" http://127.0.0.1:$port | grep -E "Requests/sec|99%|Non-2xx"
  echo "-- filter lookups spread over all $TENANTS tenants"
  wrk -t2 -c16 -d20s --latency -s "$work/all.lua" http://127.0.0.1:$port | grep -E "Requests/sec|99%|Non-2xx"
}
echo "-- store cache: the default (SCIM_BRIDGE_STORE_CACHE_MB unset); store $(du -sm "$work/d1" | cut -f1) MB on disk"
lookups
echo "RSS after the lookups: $(rss_mb "$pid") MB"
kill "$pid"; wait "$pid" 2>/dev/null || true
# The same pair with the page cache at 64 MiB (the default before 128): smaller than what
# sled reckons the spread lookups' working set, so they page nodes in and out while one
# tenant's stay cached. This shows what the cache's size does to the ratio.
echo "-- store cache: SCIM_BRIDGE_STORE_CACHE_MB=64 (the bridge restarted on the same store)"
export SCIM_BRIDGE_STORE_CACHE_MB=64
start_bridge "$work/local.toml" >/dev/null
unset SCIM_BRIDGE_STORE_CACHE_MB
lookups
echo "RSS after the lookups: $(rss_mb "$pid") MB"
kill "$pid"; wait "$pid" 2>/dev/null || true

echo "== 2. $TENANTS tenants on the four vendor simulators"
declare -A sim_port
p=18300
for v in sisense tableau thoughtspot metabase; do
  p=$((p + 1)); sim_port[$v]=$p
  RUST_LOG=warn $bin simulate "$v" --listen 127.0.0.1:$p >"$work/sim-$v.log" 2>&1 &
  pids+=("$!")
done
for v in sisense tableau thoughtspot metabase; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${sim_port[$v]}/__sim/stats" >/dev/null 2>&1 && break; sleep 0.1; done
done
cfg="$work/vendors.toml"
printf 'data_dir = "%s"\n\n[admin]\ntokens = ["${SCIM_BRIDGE_ADMIN_TOKEN}"]\n' "$work/d2" >"$cfg"
for i in $(seq 0 $((TENANTS - 1))); do
  id=$(printf 'v%04d' "$i")
  printf '\n[[tenants]]\nid = "%s"\ntokens = ["%s-%s"]\n[tenants.vendor]\n' "$id" "$token" "$id" >>"$cfg"
  case $((i % 4)) in
    0) printf 'kind = "sisense"\nbase_url = "http://127.0.0.1:%s"\nusername = "admin@sisense.local"\npassword = "admin"\n' "${sim_port[sisense]}" >>"$cfg" ;;
    # A connected app, not a PAT: Tableau keeps one session per PAT, so tenants sharing one
    # would sign each other out (the config reader refuses it).
    1) printf 'kind = "tableau"\nbase_url = "http://127.0.0.1:%s"\nsite = "default"\nclient_id = "sim-client"\nsecret_id = "sim-secret-id"\nsecret_value = "simulator-connected-app-secret"\nusername = "admin@tableau.local"\n' "${sim_port[tableau]}" >>"$cfg" ;;
    2) printf 'kind = "thoughtspot"\nbase_url = "http://127.0.0.1:%s"\nusername = "tsadmin"\npassword = "admin"\norg_id = 0\n' "${sim_port[thoughtspot]}" >>"$cfg" ;;
    3) printf 'kind = "metabase"\nbase_url = "http://127.0.0.1:%s"\napi_key = "mb_simulator_api_key"\n' "${sim_port[metabase]}" >>"$cfg" ;;
  esac
done
SCIM_BRIDGE_ADMIN_TOKEN=$admin_token $bin config check --config "$cfg" >/dev/null
sim_requests() { curl -fs "http://127.0.0.1:${sim_port[$1]}/__sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
start_bridge "$cfg"
echo "RSS after start-up: $(rss_mb "$pid") MB"
declare -A before_idle
for v in sisense tableau thoughtspot metabase; do before_idle[$v]=$(sim_requests "$v"); done
idle
for v in sisense tableau thoughtspot metabase; do
  now=$(sim_requests "$v")
  echo "$v simulator: $now requests in all, $((now - before_idle[$v])) during the idle window"
done
kill "$pid"; wait "$pid" 2>/dev/null || true
