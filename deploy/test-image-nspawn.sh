#!/usr/bin/env bash
# The closest this project's machines come to running deploy/Dockerfile: they cannot run
# containers or pull base images, so this replays the Dockerfile's RUNTIME stage on a Debian
# bookworm minbase root (debootstrap; the image's base is debian:12.11-slim, the same release)
# and runs the result under systemd-nspawn the way a container runtime would:
#   - the stage's RUN line, taken from the Dockerfile itself, runs in the root (apt-get,
#     useradd, /data, /etc/scim-bridge);
#   - the binary goes where COPY puts it (stripped the same way as in the build stage);
#   - the root file system is read-only (as readOnlyRootFilesystem), /data a bind mount (the
#     VOLUME), the user and working directory those of USER and WORKDIR, the command
#     ENTRYPOINT + CMD, all parsed from the Dockerfile;
# then checks: the embedded default starts (no config), /healthz and /readyz answer on the public
# port, the HEALTHCHECK command (parsed, run as given) succeeds, and fails once the bridge stops;
# and a config mounted at /etc/scim-bridge/scim-bridge.toml is picked up without --config.
#
#   deploy/test-image-nspawn.sh [BINARY]     default target/release/scim-bridge; needs root
#
# What it does NOT test: the build stage (rust:1.95.0-bookworm, the cache mounts), the real base
# image's contents, Docker's own HEALTHCHECK scheduling, and image pulls. The guest shares the
# host's network namespace; everything talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
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

base=target/nspawn-slim-base
if [ ! -x "$base/bin/bash" ]; then
  rm -rf "$base"
  debootstrap --variant=minbase bookworm "$base" http://deb.debian.org/debian
fi
R=target/nspawn-image
rm -rf "$R"
cp -a "$base" "$R"
cp /etc/resolv.conf "$R/etc/resolv.conf"   # apt-get inside the RUN line

# The runtime stage, parsed from the Dockerfile.
eval "$(python3 - deploy/Dockerfile <<'PY'
import json, re, shlex, sys
text = open(sys.argv[1]).read()
text = re.sub(r"\\\n", " ", text)              # line continuations
stages = re.split(r"(?m)^FROM ", text)
last = stages[-1]
def inst(name):
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^{name}\s+(.*)$", last)]
runs = inst("RUN")
assert len(runs) == 1, runs
hc = inst("HEALTHCHECK")[0]
hc_cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
entry = json.loads(inst("ENTRYPOINT")[0]); cmd = json.loads(inst("CMD")[0])
user = inst("USER")[0]; workdir = inst("WORKDIR")[0]; volume = json.loads(inst("VOLUME")[0])
copy = [c for c in inst("COPY") if c.startswith("--from=build")][0].split()[2]
print("RUN_LINE=" + shlex.quote(runs[0]))
print("HC=(" + " ".join(shlex.quote(a) for a in hc_cmd) + ")")
print("CMDLINE=(" + " ".join(shlex.quote(a) for a in entry + cmd) + ")")
print("IMG_USER=" + shlex.quote(user)); print("IMG_WORKDIR=" + shlex.quote(workdir))
print("IMG_VOLUME=" + shlex.quote(volume[0])); print("IMG_BIN=" + shlex.quote(copy))
PY
)"
echo "RUN: $RUN_LINE"
chroot "$R" /bin/sh -c "$RUN_LINE" > target/nspawn-image-run.log 2>&1 \
  || { tail -20 target/nspawn-image-run.log >&2; echo "the Dockerfile's RUN line failed" >&2; exit 1; }
objcopy --strip-debug "$bin" "$R$IMG_BIN"
chmod 0755 "$R$IMG_BIN"
vol=$(mktemp -d "${TMPDIR:-/tmp}/scim-bridge-volume.XXXXXX")
chown "${IMG_USER%%:*}:${IMG_USER##*:}" "$vol"; chmod 0700 "$vol"
uname_in_image=$(awk -F: -v u="${IMG_USER%%:*}" '$3 == u { print $1 }' "$R/etc/passwd")
[ -n "$uname_in_image" ] || { echo "USER ${IMG_USER} has no passwd entry after the RUN line" >&2; exit 1; }

pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; pid=""; }
trap 'stop; rm -rf "$vol" "$vol.out" "${cfgdir:-}"' EXIT
start() {  # extra nspawn options in "$@"
  # USER uid:gid as a container runtime applies it: setpriv, not nspawn's --user (which wants
  # the user's home directory, and the image's user has none on purpose).
  systemd-nspawn -q --register=no --keep-unit --read-only -D "$R" \
    --chdir="$IMG_WORKDIR" --bind="$vol:$IMG_VOLUME" "$@" -- \
    setpriv --reuid="${IMG_USER%%:*}" --regid="${IMG_USER##*:}" --clear-groups --no-new-privs \
    "${CMDLINE[@]}" > "$vol.out" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null http://127.0.0.1:8080/readyz 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$vol.out" >&2; echo "the bridge did not become ready" >&2; exit 1
}
fail=0
check() {  # description, then the command
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok    $what"; else echo "FAIL  $what" >&2; fail=1; fi
}

echo "command: ${CMDLINE[*]} (user $IMG_USER = $uname_in_image, workdir $IMG_WORKDIR, volume $IMG_VOLUME)"
start
check "embedded default: /healthz 200 on 0.0.0.0:8080" curl -fsS http://127.0.0.1:8080/healthz
check "embedded default: /readyz 200" curl -fsS http://127.0.0.1:8080/readyz
check "HEALTHCHECK command succeeds" "${HC[@]}"
check "token generated into the volume, 0600" test "$(stat -c %a "$vol/default-token")" = 600
check "store in the volume, owned by the image user" test "$(stat -c %u "$vol/store")" = "${IMG_USER%%:*}"
check "root file system read-only" systemd-nspawn -q --register=no --keep-unit --read-only -D "$R" \
  /bin/bash -c '! touch /etc/x 2>/dev/null'
token=$(cat "$vol/default-token")
check "SCIM on /scim/v2 with the generated token" curl -fsS -H "Authorization: Bearer $token" \
  http://127.0.0.1:8080/scim/v2/Users
stop
sleep 0.5
check "HEALTHCHECK command fails once the bridge is gone" bash -c '! "$@"' _ "${HC[@]}"

# A config in WORKDIR (scim-bridge.toml) is found without --config.
cfgdir=$(mktemp -d "${TMPDIR:-/tmp}/scim-bridge-config.XXXXXX")
tok=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '[[tenants]]\nid = "mounted"\ntokens = ["%s"]\n[tenants.vendor]\nkind = "local"\n' "$tok" > "$cfgdir/scim-bridge.toml"
chmod 0755 "$cfgdir"; chmod 0644 "$cfgdir/scim-bridge.toml"
# The directory is mounted (as a Kubernetes ConfigMap volume is): a read-only root has no file
# to mount onto, and nspawn, unlike a container runtime, will not create one.
start --bind-ro="$cfgdir:$IMG_WORKDIR"
check "mounted config picked up (tenant 'mounted' answers)" curl -fsS -H "Authorization: Bearer $tok" \
  http://127.0.0.1:8080/tenants/mounted/scim/v2/Users
stop
rm -rf "$cfgdir" "$vol.out"
[ "$fail" -eq 0 ] || exit 1
echo "Dockerfile runtime stage under nspawn: all checks passed"
