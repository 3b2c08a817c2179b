#!/usr/bin/env bash
# Store benchmark (issue 14): `store export` and `store import` of USERS users.
#   Seeds a data dir with USERS users straight into the store (bench_seed direct, the same
#   documents and indexes POST /Users writes), times `store export` (dump size, MB/s) and
#   `store import` into an empty data dir, then serves the imported store and checks it:
#   /readyz, totalResults = USERS, filter lookups of the first, middle and last user.
# Usage: scripts/bench-store.sh [USERS=1000000]
# Loopback only; every wait is bounded; the work dir is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-1000000}"
# SKIP_BUILD=1 uses the binaries already in target/release.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin scim-bridge --example bench_seed >/dev/null 2>&1
bin=target/release/scim-bridge
seed=target/release/examples/bench_seed
work="$(mktemp -d)"
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
token=bench-token-0123456789abcdef0123456789abcdef
port=18191
admin_port=18192
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
mb() { echo "scale=1; $1 / 1048576" | bc; }
# Peak RSS of a finished command, from GNU time's report.
peak() { awk -F': ' '/Maximum resident/ {printf "%.0f MB", $2/1024}' "$1"; }

echo "== load: $(uptime | sed 's/.*load average/load average/')"
echo "== seeding $USERS users straight into the store"
$seed direct --data-dir "$work/src" --users "$USERS" 2>/dev/null
echo "store on disk: $(du -sm "$work/src" | cut -f1) MB"

echo "== store export"
t0=$(now)
/usr/bin/time -v -o "$work/export.time" $bin store export --data-dir "$work/src" >"$work/dump.jsonl" 2>"$work/export.err" ||
  { cat "$work/export.err"; exit 1; }
t1=$(now)
size=$(stat -c %s "$work/dump.jsonl")
lines=$(wc -l <"$work/dump.jsonl")
et=$(secs "$t0" "$t1")
echo "dump: $(mb "$size") MB, $lines lines, in $et s = $(echo "scale=1; $size / 1048576 / $et" | bc) MB/s, $(echo "$USERS / $et" | bc) users/s; peak RSS $(peak "$work/export.time")"

echo "== store import into an empty data dir"
t0=$(now)
/usr/bin/time -v -o "$work/import.time" $bin store import --data-dir "$work/dst" <"$work/dump.jsonl" >"$work/import.out" 2>"$work/import.err" ||
  { cat "$work/import.err"; exit 1; }
t1=$(now)
it=$(secs "$t0" "$t1")
echo "import: $it s = $(echo "scale=1; $size / 1048576 / $it" | bc) MB/s, $(echo "$USERS / $it" | bc) users/s; peak RSS $(peak "$work/import.time"); store on disk: $(du -sm "$work/dst" | cut -f1) MB"
sed 's/^/  /' "$work/import.out"
rm -f "$work/dump.jsonl"

echo "== serving the imported store"
t0=$(now)
SCIM_BRIDGE_TOKEN=$token RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin_port --data-dir "$work/dst" >"$work/log" 2>&1 &
pid=$!
ready=
for _ in $(seq 1200); do
  if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
[ -n "$ready" ] || { echo "FAIL: the imported store did not become ready within 60 s"; cat "$work/log"; exit 1; }
echo "/readyz 200 after $(secs "$t0" "$(now)") s"
base=http://127.0.0.1:$port/scim/v2
total=$(curl -fs --max-time 30 -H "Authorization: Bearer $token" "$base/Users?count=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])')
[ "$total" = "$USERS" ] || { echo "FAIL: totalResults $total, want $USERS"; exit 1; }
echo "totalResults = $total"
for i in 0 $((USERS / 2)) $((USERS - 1)); do
  name=$(printf 'bench.user%07d@example.com' "$i")
  found=$(curl -fs --max-time 10 -H "Authorization: Bearer $token" "$base/Users?filter=userName%20eq%20%22$name%22" |
    python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["totalResults"], v["Resources"][0]["userName"] if v["Resources"] else "-")')
  [ "$found" = "1 $name" ] || { echo "FAIL: lookup of $name answered '$found'"; exit 1; }
done
echo "filter lookups of users 0, $((USERS / 2)) and $((USERS - 1)) found each"
kill $pid; wait $pid 2>/dev/null || true
pid=
echo "== OK"
