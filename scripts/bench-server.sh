#!/usr/bin/env bash
# Server benchmark (issue 3): 100,000 users in the local connector, load generator on this machine.
#   POST /Users rate (16 connections), then with wrk, 16 connections, 2 threads, 20 s each:
#   GET /Users?filter=userName eq "…" (index lookup) and GET /Users/{id}; resident memory;
#   start-up time with 1,000,000 stored users.
# Usage: scripts/bench-server.sh [USERS=100000] [STARTUP_USERS=1000000]
# Loopback only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-100000}"
STARTUP_USERS="${2:-1000000}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --bin scim-bridge --example bench_seed >/dev/null 2>&1
bin=target/release/scim-bridge
seed=target/release/examples/bench_seed
work="$(mktemp -d)"
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
token=bench-token-0123456789
port=18181
# The admin listener (/metrics) on a port of its own, not the default 9090 something else may hold.
admin_port=18182
SCIM_BRIDGE_TOKEN=$token RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port --data-dir "$work/d" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
base=http://127.0.0.1:$port/scim/v2
$seed http --url $base --token $token --users "$USERS" --concurrency 16 --out "$work/users.tsv"

cat >"$work/filter.lua" <<LUA
local names = {}
for line in io.lines("$work/users.tsv") do names[#names+1] = line:match("^([^\t]+)") end
math.randomseed(42)
request = function()
  local n = names[math.random(#names)]
  return wrk.format("GET", "/scim/v2/Users?filter=userName%20eq%20%22" .. n .. "%22", {["Authorization"]="Bearer $token"})
end
LUA
cat >"$work/byid.lua" <<LUA
local ids = {}
for line in io.lines("$work/users.tsv") do ids[#ids+1] = line:match("\t(.+)$") end
math.randomseed(7)
request = function()
  return wrk.format("GET", "/scim/v2/Users/" .. ids[math.random(#ids)], {["Authorization"]="Bearer $token"})
end
LUA
echo "== GET /Users?filter=userName eq … ($USERS users)"
wrk -t2 -c16 -d20s --latency -s "$work/filter.lua" http://127.0.0.1:$port | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "== GET /Users/{id}"
wrk -t2 -c16 -d20s --latency -s "$work/byid.lua" http://127.0.0.1:$port | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "== resident memory after the user load: $(awk '/VmRSS/ {printf "%.0f MB", $2/1024}' /proc/$pid/status)"
echo "== a group of all $USERS users"
$seed group --url $base --token $token --users-file "$work/users.tsv"
echo "== resident memory after the group exercise: $(awk '/VmRSS/ {printf "%.0f MB", $2/1024}' /proc/$pid/status) (VmHWM $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$pid/status))"
kill $pid; wait $pid 2>/dev/null || true

echo "== start-up with $STARTUP_USERS stored users"
$seed direct --data-dir "$work/big" --users "$STARTUP_USERS"
start=$(date +%s.%N)
SCIM_BRIDGE_TOKEN=$token RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port --data-dir "$work/big" >"$work/log2" 2>&1 &
pid=$!
until curl -fs -H "Authorization: Bearer $token" "$base/Users?count=1" >/dev/null 2>&1; do sleep 0.01; done
end=$(date +%s.%N)
echo "first open after the bulk load: first answered request after $(echo "$end - $start" | bc) s; totalResults=$(curl -fs -H "Authorization: Bearer $token" "$base/Users?count=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])')"
kill $pid; wait $pid 2>/dev/null || true
start=$(date +%s.%N)
SCIM_BRIDGE_TOKEN=$token RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port --data-dir "$work/big" >"$work/log3" 2>&1 &
pid=$!
until curl -fs -H "Authorization: Bearer $token" "$base/Users?count=1" >/dev/null 2>&1; do sleep 0.01; done
end=$(date +%s.%N)
echo "restart after a graceful stop: first answered request after $(echo "$end - $start" | bc) s"
