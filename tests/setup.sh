#!/usr/bin/env bash
# What the tests need beyond the runtime's own setup (packaging/setup-host.sh): the engines the
# tests start by hand (docker, containerd), iptables and CNI plugins for their networks, and a
# development venv (/opt/kata-dev) with an editable install of this checkout plus the test and lint
# tools. Idempotent; run as root from the repository: tests/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${KATA_DEV_VENV:-/opt/kata-dev}
say() { echo "[kata-test-setup] $*"; }

pkgs="docker.io containerd iptables containernetworking-plugins"
missing=""
for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# On Debian's python3 as the user's install (packaging/setup-host.sh), not whatever is first on PATH.
if [ -x "$DEV/bin/python" ] && ! grep -qx "home = /usr/bin" "$DEV/pyvenv.cfg" 2>/dev/null; then
  say "replacing $DEV: it is not on Debian's /usr/bin/python3"
  rm -rf "$DEV"
fi
if [ ! -x "$DEV/bin/python" ]; then
  say "creating the development venv $DEV"
  /usr/bin/python3 -m venv "$DEV"
fi
"$DEV/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
"$DEV/bin/python" -m compileall -q -j0 kata_runtime
say "done: $DEV/bin/kata-runtime (this checkout)"
