#!/usr/bin/env bash
# Boots a minimal Debian bookworm under systemd-nspawn with deploy/systemd/scim-bridge.service
# installed exactly as written (sandbox and all), and checks that, under a real systemd:
#   - the sysusers file creates the user, the unit starts (ExecStartPre `config check` passes);
#   - the secrets arrive through LoadCredential= and ${file:/run/credentials/...};
#   - /healthz, /readyz, a SCIM create and filter, /metrics with and without metrics_token answer
#     as they should;
#   - the process runs as the service user with no capabilities, no_new_privs and a seccomp
#     filter; the store is 0700/0600 in /var/lib/scim-bridge;
#   - `systemctl reload` delivers SIGHUP (the bridge logs it and keeps serving, same PID);
#   - `systemctl stop` ends it cleanly (Result=success, exit status 0).
#
#   deploy/systemd/test-nspawn.sh [BINARY]    default target/release/scim-bridge; needs root
#
# Not part of .ci/lint-deploy: it needs root, debootstrap and ~250 MB of Debian packages (about
# 2 minutes the first time; the root is cached in target/nspawn-bookworm). Everything stays on
# this machine: the guest shares the host's network namespace and talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/release/scim-bridge}")
[ -x "$bin" ] || { echo "no executable $bin" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends debootstrap systemd-container
fi
for p in 8080 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "127.0.0.1:$p is in use on this machine; the guest shares its network" >&2
    exit 1
  fi
done

R=target/nspawn-bookworm
if [ ! -x "$R/usr/bin/curl" ]; then
  rm -rf "$R"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates \
    bookworm "$R" http://deb.debian.org/debian
fi

# Install what deploy/README.md's systemd steps install, with test secrets.
objcopy --strip-debug "$bin" "$R/usr/local/bin/scim-bridge"
chmod 0755 "$R/usr/local/bin/scim-bridge"
install -D -m 0644 deploy/systemd/scim-bridge.sysusers.conf "$R/etc/sysusers.d/scim-bridge.conf"
install -D -m 0644 deploy/systemd/scim-bridge.service "$R/etc/systemd/system/scim-bridge.service"
install -d -m 0755 "$R/etc/scim-bridge"
rm -rf "$R/etc/scim-bridge/credentials" "$R/var/lib/scim-bridge" "$R/root/result.txt"
install -d -m 0700 "$R/etc/scim-bridge/credentials"
for k in admin-token metrics-token sandbox-scim-token; do
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$R/etc/scim-bridge/credentials/$k")
done
cat > "$R/etc/scim-bridge/scim-bridge.toml" <<'EOF'
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9090"
tokens = ["${file:/run/credentials/scim-bridge.service/admin-token}"]
metrics_token = "${file:/run/credentials/scim-bridge.service/metrics-token}"
[[tenants]]
id = "sandbox"
tokens = ["${file:/run/credentials/scim-bridge.service/sandbox-scim-token}"]
[tenants.vendor]
kind = "local"
EOF

# The checks run inside the guest, after the bridge, and power it off.
cat > "$R/usr/local/bin/scim-bridge-test" <<'EOF'
#!/bin/bash
exec > /root/result.txt 2>&1
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:8080/readyz 2>/dev/null && break
  sleep 0.1
done
TOK=$(cat /etc/scim-bridge/credentials/sandbox-scim-token)
MT=$(cat /etc/scim-bridge/credentials/metrics-token)
code() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
echo "check healthz $(code http://127.0.0.1:8080/healthz)"
echo "check readyz $(code http://127.0.0.1:8080/readyz)"
echo "check create $(code -H "Authorization: Bearer $TOK" -H 'Content-Type: application/scim+json' \
  -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}' \
  http://127.0.0.1:8080/tenants/sandbox/scim/v2/Users)"
echo "check filter $(code -H "Authorization: Bearer $TOK" \
  'http://127.0.0.1:8080/tenants/sandbox/scim/v2/Users?filter=userName%20eq%20%22ada@example.com%22')"
echo "check metrics-without-token $(code http://127.0.0.1:9090/metrics)"
echo "check metrics-with-token $(code -H "Authorization: Bearer $MT" http://127.0.0.1:9090/metrics)"
PID=$(systemctl show -p MainPID --value scim-bridge)
echo "check user $(stat -c %U /proc/$PID)"
echo "check capeff $(awk '$1 == "CapEff:" { print $2 }' /proc/$PID/status)"
echo "check nonewprivs $(awk '$1 == "NoNewPrivs:" { print $2 }' /proc/$PID/status)"
echo "check seccomp $(awk '$1 == "Seccomp:" { print $2 }' /proc/$PID/status)"
echo "check store-mode $(stat -c %a /var/lib/scim-bridge) $(stat -c %a /var/lib/scim-bridge/store/db)"
systemctl reload scim-bridge
sleep 1
echo "check reload $(systemctl is-active scim-bridge) same-pid=$([ "$(systemctl show -p MainPID --value scim-bridge)" = "$PID" ] && echo yes || echo no) served-after=$(code -H "Authorization: Bearer $TOK" http://127.0.0.1:8080/tenants/sandbox/scim/v2/Users)"
echo "check sighup-logged $(journalctl -u scim-bridge -o cat | grep -c 'SIGHUP received')"
systemctl stop scim-bridge
echo "check stop $(systemctl show -p Result --value scim-bridge) $(systemctl show -p ExecMainStatus --value scim-bridge)"
echo "--- journal"
journalctl -u scim-bridge --no-pager -o cat | tail -20
systemctl poweroff
EOF
chmod 0755 "$R/usr/local/bin/scim-bridge-test"
cat > "$R/etc/systemd/system/scim-bridge-test.service" <<'EOF'
[Unit]
After=scim-bridge.service
Wants=scim-bridge.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/scim-bridge-test
[Install]
WantedBy=multi-user.target
EOF
systemd-nspawn -q -D "$R" systemctl enable scim-bridge.service scim-bridge-test.service >/dev/null 2>&1 \
  || chroot "$R" systemctl enable scim-bridge.service scim-bridge-test.service

# --register=no --keep-unit: this host runs no systemd of its own to register the guest with.
timeout 180 systemd-nspawn -q --register=no --keep-unit -D "$R" --console=pipe -b \
  > target/nspawn-boot.log 2>&1 || true
[ -f "$R/root/result.txt" ] || { tail -30 target/nspawn-boot.log >&2; echo "the guest wrote no result" >&2; exit 1; }

expect=(
  "check healthz 200" "check readyz 200" "check create 201" "check filter 200"
  "check metrics-without-token 401" "check metrics-with-token 200" "check user scim-bridge"
  "check capeff 0000000000000000" "check nonewprivs 1" "check seccomp 2" "check store-mode 700 600"
  "check reload active same-pid=yes served-after=200" "check sighup-logged 1" "check stop success 0"
)
fail=0
for e in "${expect[@]}"; do
  if grep -qxF "$e" "$R/root/result.txt"; then echo "ok    $e"; else echo "FAIL  $e" >&2; fail=1; fi
done
if [ "$fail" -ne 0 ]; then
  cat "$R/root/result.txt" >&2
  exit 1
fi
echo "systemd unit under systemd $(systemd-nspawn --version | head -1 | awk '{print $2}') in nspawn: all checks passed"
