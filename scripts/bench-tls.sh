#!/usr/bin/env bash
# TLS benchmark (issue 14): what native TLS costs on keep-alive connections.
#   Two bridges side by side on copies of one store of USERS users (bench_seed direct): one plain
#   HTTP, one HTTPS with a self-signed ECDSA P-256 certificate made here with the openssl CLI
#   (the bridge itself links no OpenSSL: rustls). The same wrk load on both, 16 keep-alive
#   connections, 2 threads, DURATION s of GET /Users?filter=userName eq "…" (an index lookup),
#   alternated plain, TLS, plain, TLS… ROUNDS times so that the noise of this machine falls on
#   both; prints every run, the medians and the cost: 1 - TLS/plain (target <= 25 %).
# Usage: scripts/bench-tls.sh [USERS=10000] [ROUNDS=3] [DURATION=20]
# Loopback only; every wait is bounded; the work dir is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-10000}"
ROUNDS="${2:-3}"
DURATION="${3:-20}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
# SKIP_BUILD=1 uses the binaries already in target/release.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin scim-bridge --example bench_seed >/dev/null 2>&1
bin=target/release/scim-bridge
seed=target/release/examples/bench_seed
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$work"' EXIT
token=bench-token-0123456789abcdef0123456789abcdef
plain_port=18201
tls_port=18202

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# The bridge refuses a key file others can read.
chmod 600 "$work/key.pem"

$seed direct --data-dir "$work/plain" --users "$USERS" >/dev/null 2>&1
# The same bytes for both bridges (a stopped store is a directory).
cp -a "$work/plain" "$work/tls"

# One config each, identical but for the port, the data dir and [tls].
conf() { # name port admin_port extra
  cat >"$work/$1.toml" <<TOML
listen = "127.0.0.1:$2"
data_dir = "$work/$1"
$4
[admin]
listen = "127.0.0.1:$3"

[[tenants]]
id = "default"
tokens = ["$token"]
[tenants.vendor]
kind = "local"
TOML
}
conf plain $plain_port 18203 ""
conf tls $tls_port 18204 "[tls]
cert = \"$work/cert.pem\"
key = \"$work/key.pem\"
"
for name in plain tls; do
  RUST_LOG=warn $bin serve --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  pids+=($!)
done
path="/tenants/default/scim/v2"
for url in http://127.0.0.1:$plain_port https://127.0.0.1:$tls_port; do
  ok=
  for _ in $(seq 200); do
    if curl -fsk --max-time 2 "$url/readyz" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.05
  done
  [ -n "$ok" ] || { echo "FAIL: $url not ready in 10 s"; head -3 "$work"/*.log; exit 1; }
  # Each serves the data: a lookup finds a user.
  n=$(curl -fsk --max-time 5 -H "Authorization: Bearer $token" \
    "$url$path/Users?filter=userName%20eq%20%22bench.user0000001@example.com%22" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])')
  [ "$n" = 1 ] || { echo "FAIL: $url lookup answered $n"; exit 1; }
done
# The plain listener does not speak TLS and the TLS one does not speak plain HTTP.
if curl -fsk --max-time 2 "https://127.0.0.1:$plain_port/readyz" >/dev/null 2>&1 ||
  curl -fs --max-time 2 "http://127.0.0.1:$tls_port/readyz" >/dev/null 2>&1; then
  echo "FAIL: a listener answered in the other protocol"
  exit 1
fi

cat >"$work/filter.lua" <<LUA
math.randomseed(42)
request = function()
  local n = string.format("bench.user%07d@example.com", math.random(0, $USERS - 1))
  return wrk.format("GET", "$path/Users?filter=userName%20eq%20%22" .. n .. "%22", {["Authorization"]="Bearer $token"})
end
LUA

echo "== $USERS users; wrk -t2 -c16 -d${DURATION}s keep-alive, GET $path/Users?filter=userName eq \"…\""
echo "== load before: $(uptime | sed 's/.*load average/load average/')"
: >"$work/plain.rates"
: >"$work/tls.rates"
run() { # name url
  out=$(wrk -t2 -c16 -d"${DURATION}s" --latency -s "$work/filter.lua" "$2")
  rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
  echo "$1: $rate req/s (p50 $p50, p99 $p99)${bad:+ $bad}"
  [ -z "$bad" ] || { echo "FAIL: errors in the $1 run"; exit 1; }
  echo "$rate" >>"$work/$1.rates"
}
for r in $(seq "$ROUNDS"); do
  echo "-- round $r"
  run plain http://127.0.0.1:$plain_port
  run tls https://127.0.0.1:$tls_port
done
median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
mp=$(median "$work/plain.rates")
mt=$(median "$work/tls.rates")
echo "== load after: $(uptime | sed 's/.*load average/load average/')"
awk -v p="$mp" -v t="$mt" -v n="$ROUNDS" 'BEGIN {
  printf "== median of %d: plain %.0f req/s, TLS %.0f req/s: TLS/plain = %.3f, TLS cost %.1f %% (target <= 25 %%)\n", n, p, t, t / p, 100 * (1 - t / p) }'
echo "resident memory: plain $(awk '/VmRSS/ {printf "%.0f MB", $2/1024}' /proc/${pids[0]}/status), TLS $(awk '/VmRSS/ {printf "%.0f MB", $2/1024}' /proc/${pids[1]}/status)"
