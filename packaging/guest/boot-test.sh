#!/bin/bash
# Boot the built guest under QEMU (TCG) and check it.
#
#   packaging/guest/boot-test.sh [--bare] [--dir DIR] [--timeout SEC] [--debug] [--cpu MODEL]
#                                [--accel tcg|kvm] [--append PARAMS] [--no-image] [--repeat N]
#
# Default: kata.selftest=1, i.e. the guest's /init mounts the root image and runs python there to
# import grpc, protobuf, our protocol modules and the agent, and runc --version; exits 0 iff the
# console shows KATA_SELFTEST_OK.  --bare: kata.bare=1, boot to the point where the agent would start
# and power off; exits 0 iff KATA_BARE_BOOT_DONE.  Prints the time from QEMU's start to the marker
# and to QEMU's exit.  --no-image boots without the root disk (bare stops right after the modules).
# DIR holds vmlinux.container, kata-containers-initrd.img and kata-containers.img (default: the
# latest build, /var/cache/kata-runtime/guest/latest).  --repeat N boots N times (min/median/max).

set -euo pipefail

DIR=/var/cache/kata-runtime/guest/latest
MODE=selftest
TIMEOUT=120
DEBUG=0
CPU=max
ACCEL=tcg
EXTRA=
IMAGE=1
REPEAT=1
QEMU=${QEMU:-qemu-system-x86_64}
FAST_BOOT_PARAMS="quiet tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.noaux i8042.nomux \
i8042.nopnp i8042.dumbkbd i8042.noprobe mitigations=off cryptomgr.notests 8250.nr_uarts=1 \
random.trust_cpu=on nowatchdog"

while [ $# -gt 0 ]; do
	case "$1" in
	--bare) MODE=bare ;;
	--dir) DIR=$2; shift ;;
	--timeout) TIMEOUT=$2; shift ;;
	--debug) DEBUG=1 ;;
	--cpu) CPU=$2; shift ;;
	--accel) ACCEL=$2; shift ;;
	--append) EXTRA=$2; shift ;;
	--no-image) IMAGE=0 ;;
	--repeat) REPEAT=$2; shift ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "boot-test.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

for f in vmlinux.container kata-containers-initrd.img kata-containers.img; do
	[ -f "$DIR/$f" ] || { echo "boot-test.sh: $DIR/$f missing (run packaging/build-guest.sh)" >&2; exit 2; }
done

if [ "$MODE" = bare ]; then
	MARK=KATA_BARE_BOOT_DONE
	PARAMS="kata.bare=1"
else
	MARK=KATA_SELFTEST_OK
	PARAMS="kata.selftest=1"
fi
APPEND="console=ttyS0 panic=1 $FAST_BOOT_PARAMS $PARAMS"
if [ "$DEBUG" = 1 ]; then
	APPEND="${APPEND/quiet /} kata.debug=1"
fi
[ -n "$EXTRA" ] && APPEND="$APPEND $EXTRA"

LOGDIR=$(mktemp -d /tmp/kata-boot-test.XXXXXX)
QPID=
cleanup() {
	if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
		kill -KILL "$QPID" 2>/dev/null || true
		wait "$QPID" 2>/dev/null || true
	fi
	rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# boot_once N: sets TMARK (seconds to the marker, empty if none) and TEXIT (to QEMU's exit)
boot_once() {
	local log=$LOGDIR/console.$1.log t0 tmark="" texit="" argv
	argv=("$QEMU" -machine q35 -accel "$ACCEL" -cpu "$CPU" -m 512 -smp 1
		-nodefaults -no-user-config -display none -vga none -nic none -no-reboot
		-serial "file:$log"
		-kernel "$DIR/vmlinux.container" -initrd "$DIR/kata-containers-initrd.img"
		-append "$APPEND")
	if [ "$IMAGE" = 1 ]; then
		argv+=(-drive "file=$DIR/kata-containers.img,if=none,id=root,format=raw,readonly=on"
			-device virtio-blk-pci,drive=root)
	fi
	: >"$log"
	t0=$(now)
	"${argv[@]}" </dev/null >"$LOGDIR/qemu.out" 2>&1 &
	QPID=$!
	while kill -0 "$QPID" 2>/dev/null; do
		if [ -z "$tmark" ] && grep -q "$MARK" "$log"; then
			tmark=$(since "$t0")
		fi
		if [ "$(since "$t0" | cut -d. -f1)" -ge "$TIMEOUT" ]; then
			echo "boot-test: timeout after $TIMEOUT s" >&2
			kill -KILL "$QPID" 2>/dev/null || true
			break
		fi
		sleep 0.02
	done
	wait "$QPID" 2>/dev/null || true
	QPID=
	texit=$(since "$t0")
	[ -z "$tmark" ] && grep -q "$MARK" "$log" && tmark=$texit
	if [ "$DEBUG" = 1 ] || [ -z "$tmark" ]; then
		echo "--- console (run $1) ---" >&2
		tr -d "\r" <"$log" | tail -n "${CONSOLE_LINES:-40}" >&2
		[ -s "$LOGDIR/qemu.out" ] && { echo "--- qemu ---" >&2; cat "$LOGDIR/qemu.out" >&2; }
		echo "---" >&2
	fi
	grep -a -E 'KATA_(SELFTEST|INIT|AGENT)_[A-Z]+' "$log" | tr -d '\r' | sed 's/^/console: /' || true
	TMARK=$tmark
	TEXIT=$texit
}

echo "boot-test: $MODE boot of $(readlink -f "$DIR") (accel $ACCEL, cpu $CPU)"
marks=()
for i in $(seq 1 "$REPEAT"); do
	boot_once "$i"
	if [ -z "$TMARK" ]; then
		echo "boot-test: FAIL: no $MARK (run $i; QEMU exited at $TEXIT s)"
		exit 1
	fi
	echo "boot-test: run $i: $MARK at $TMARK s, QEMU exited at $TEXIT s"
	marks+=("$TMARK")
done
if [ "$REPEAT" -gt 1 ]; then
	printf '%s\n' "${marks[@]}" | sort -n | awk '{ a[NR] = $1 } END {
		printf "boot-test: %d runs: min %.2f s, median %.2f s, max %.2f s\n", NR, a[1], a[int((NR + 1) / 2)], a[NR] }'
fi
echo "boot-test: OK"
