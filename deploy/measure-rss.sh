#!/usr/bin/env bash
# Measures the bridge's resident memory (VmRSS, and the peak VmHWM, from /proc/PID/status) for
# sizing the StatefulSet's requests/limits and the systemd unit's MemoryMax. The figures in
# deploy/README.md come from this script.
#
#   deploy/measure-rss.sh [BINARY] [TENANTS...]     default: target/release/scim-bridge, 1 100 1000
#   USERS_PER_TENANT=20 GROUPS_PER_TENANT=2 deploy/measure-rss.sh     (the defaults)
#   WORKERS=8 deploy/measure-rss.sh ...     passes --workers 8 (default: one per core)
#
# For each tenant count: a config of that many `local` tenants (one static token each), a fresh
# store in a temporary directory, `serve` on free loopback ports; then it reads
#   idle    VmRSS once /readyz answers 200 and 2 s have passed;
#   loaded  VmRSS after USERS_PER_TENANT users and GROUPS_PER_TENANT groups (with every user as
#           member) were created in every tenant and each tenant was listed and filtered once,
#           over keep-alive connections;
#   peak    VmHWM (the high-water mark of RSS) at the end.
# All traffic goes to 127.0.0.1 only, is bounded in count, and the bridge is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/scim-bridge}
[ "$#" -gt 0 ] && shift
counts=("$@")
[ "${#counts[@]}" -gt 0 ] || counts=(1 100 1000)
users=${USERS_PER_TENANT:-20}
groups=${GROUPS_PER_TENANT:-2}
workers=()
[ -n "${WORKERS:-}" ] && workers=(--workers "$WORKERS")
[ -x "$bin" ] || { echo "no executable $bin (cargo build --release --bin scim-bridge)" >&2; exit 1; }

printf '%-8s %-10s %-10s %-10s %-10s %s\n' tenants idle_MiB loaded_MiB peak_MiB start_s "requests"
for n in "${counts[@]}"; do
  dir=$(mktemp -d "${TMPDIR:-/tmp}/scim-bridge-rss.XXXXXX")
  pid=""
  cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
  }
  trap cleanup EXIT
  python3 - "$dir" "$n" <<'PY'
import secrets, sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/scim-bridge.toml", "w") as cfg, open(f"{d}/tokens", "w") as toks:
    cfg.write(f'listen = "127.0.0.1:0"\ndata_dir = "{d}/data"\n[admin]\nlisten = "127.0.0.1:0"\n')
    for i in range(n):
        t = secrets.token_hex(32)
        toks.write(f"t{i:04d} {t}\n")
        cfg.write(f'[[tenants]]\nid = "t{i:04d}"\ntokens = ["{t}"]\n[tenants.vendor]\nkind = "local"\n')
PY
  start=$(date +%s.%N)
  RUST_LOG=warn "$bin" serve --config "$dir/scim-bridge.toml" "${workers[@]}" > "$dir/out" 2> "$dir/err" &
  pid=$!
  addr=""
  for _ in $(seq 1 600); do
    addr=$(sed -n 's#^scim-bridge listening on http://\(.*\)$#\1#p' "$dir/out")
    if [ -n "$addr" ] && python3 - "$addr" <<'PY' 2>/dev/null
import http.client, sys
h, p = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(h, int(p), timeout=2)
c.request("GET", "/readyz")
sys.exit(0 if c.getresponse().status == 200 else 1)
PY
    then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "bridge did not start" >&2; cat "$dir/err" >&2; exit 1; }
  ready=$(date +%s.%N)
  sleep 2
  rss() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
  idle=$(rss VmRSS)
  reqs=$(python3 - "$addr" "$dir/tokens" "$users" "$groups" <<'PY'
import http.client, json, sys
h, p = sys.argv[1].rsplit(":", 1)
users, groups = int(sys.argv[3]), int(sys.argv[4])
c = http.client.HTTPConnection(h, int(p), timeout=30)
count = 0
def call(method, path, token, body=None):
    global count
    hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=hdr)
    r = c.getresponse()
    data = r.read()
    count += 1
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None
for line in open(sys.argv[2]):
    tenant, token = line.split()
    base = f"/tenants/{tenant}/scim/v2"
    ids = []
    for u in range(users):
        doc = call("POST", f"{base}/Users", token, {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"user{u}@{tenant}.example", "externalId": f"ext-{u}",
            "name": {"givenName": "Ada", "familyName": f"Lovelace {u}"},
            "emails": [{"value": f"user{u}@{tenant}.example", "type": "work", "primary": True}],
        })
        ids.append(doc["id"])
    for g in range(groups):
        call("POST", f"{base}/Groups", token, {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": f"Group {g}", "members": [{"value": i} for i in ids],
        })
    call("GET", f"{base}/Users?count=100", token)
    call("GET", f'{base}/Users?filter=userName%20eq%20%22user0@{tenant}.example%22', token)
print(count)
PY
)
  loaded=$(rss VmRSS)
  peak=$(rss VmHWM)
  printf '%-8s %-10s %-10s %-10s %-10s %s\n' "$n" "$idle" "$loaded" "$peak" \
    "$(awk -v a="$start" -v b="$ready" 'BEGIN { printf "%.2f", b - a }')" "$reqs"
  cleanup
  pid=""
  trap - EXIT
done
