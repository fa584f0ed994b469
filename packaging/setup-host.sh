#!/usr/bin/env bash
# Set up this host to run kata-runtime: Debian packages, a Python venv with the runtime,
# the guest kernel and image (built from Debian packages, cached), and the configuration.
# Idempotent; run as root from the repository. Usage: packaging/setup-host.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KATA_VENV:-/opt/kata-runtime/venv}
say() { echo "[kata-setup] $*"; }

if [ "$(id -u)" != 0 ]; then echo "kata-setup: run as root" >&2; exit 1; fi

pkgs="python3-venv qemu-system-x86 runc busybox-static erofs-utils cpio xz-utils zstd iproute2 kmod socat bats procps"
missing=""
for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# A normal install, as a user's: the runtime and its dependencies only (no test or lint tools), not
# tied to this checkout (which can be deleted afterwards). A venv left by an older, editable
# install of the checkout is made anew.
if [ -x "$VENV/bin/python" ] && { [ -x "$VENV/bin/pytest" ] || "$VENV/bin/pip" show -f kata-runtime 2>/dev/null | grep -q "__editable__"; }; then
  say "replacing the development venv $VENV with a normal install"
  rm -rf "$VENV"
fi
# Debian's python3, whatever else is first on PATH (pyenv, /usr/local): the distribution's
# interpreter is what the packages above were built for, and its one binary without a shared
# libpython keeps each kata-shim and kata-proxy small. A venv on another interpreter is made anew.
if [ -x "$VENV/bin/python" ] && ! grep -qx "home = /usr/bin" "$VENV/pyvenv.cfg" 2>/dev/null; then
  say "replacing $VENV: it is not on Debian's /usr/bin/python3"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the Python venv $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
say "installing kata-runtime into $VENV"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r setup.cfg pyproject.toml README.md kata_runtime "$build/"
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$build"
"$VENV/bin/pip" install -q --disable-pip-version-check "$build"
# Bytecode now, whatever PYTHONDONTWRITEBYTECODE says: compiling at every start costs each kata-shim
# and kata-proxy about 0.7 MB of memory, and every CLI call time.
site=$("$VENV/bin/python" -c 'import kata_runtime, os; print(os.path.dirname(kata_runtime.__file__))')
"$VENV/bin/python" -m compileall -q -j0 "$site"
for prog in kata-runtime; do ln -sf "$VENV/bin/$prog" "/usr/local/bin/$prog"; done

say "building and installing the guest kernel and image"
packaging/build-guest.sh --install
say "done: $(command -v kata-runtime) ($(kata-runtime --version | head -1))"
