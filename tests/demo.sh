#!/usr/bin/env bash
# Build a busybox bundle and run `uname -r` in it with kata-runtime: the guest kernel's release,
# not the host's, is printed.
set -euo pipefail
dir=$(mktemp -d /tmp/kata-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/rootfs/bin"
cp /bin/busybox "$dir/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$dir/rootfs/bin/$a"; done
(cd "$dir" && kata-runtime spec)
python3 - "$dir/config.json" <<'PY'
import json, sys
p = sys.argv[1]
s = json.load(open(p))
s["process"]["terminal"] = False
s["process"]["args"] = ["uname", "-r"]
json.dump(s, open(p, "w"), indent=2)
PY
echo "host kernel:  $(uname -r)"
echo -n "guest kernel: "
kata-runtime run --bundle "$dir" "kata-demo-$$"
