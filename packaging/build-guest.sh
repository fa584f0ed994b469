#!/bin/bash
# Build the kata guest from Debian 12 packages: kernel, initrd, root image and configuration.toml.
#
#   packaging/build-guest.sh [--install] [--force] [--prefix DIR]
#
# Outputs, in /var/cache/kata-runtime/guest/<hash>/ (and the symlink .../guest/latest):
#   vmlinux.container            ELF vmlinux of Debian's linux-image-*-amd64 (booted via PVH: no
#                                decompression in the guest, ~6 s less under TCG)
#   kata-containers-initrd.img   tiny uncompressed cpio: busybox, the virtio/erofs/9p/... modules, /init
#   kata-containers.img          erofs root: python3.11, grpcio, protobuf, runc, busybox, the agent
#   configuration.toml           Kata 1.x configuration pointing at the installed files
# --install copies kernel, initrd and image to --prefix (default /usr/share/kata-containers) and the
# configuration to /usr/share/defaults/kata-containers/configuration.toml (each atomically).
# --force rebuilds every stage (downloaded .debs stay cached).
#
# <hash> covers every input: the exact package versions apt resolves (guest/packages.list), the
# files under packaging/guest/, this script, configuration.toml.in and the agent's sources
# (kata_runtime/__init__.py, kata_runtime/protocol/**/*.py, kata_runtime/guest/**/*.py).  The
# expensive stages (packages -> root tree with compiled stdlib; kernel package -> vmlinux + modules)
# are cached on their own in guest/stage/, keyed by their own inputs only, so a change of agent code
# only redoes the cheap stage (copy sources, compileall, cpio, mkfs.erofs): seconds.
#
# Environment: SOURCE_DATE_EPOCH (timestamp of every file in the images; default fixed),
# KATA_GUEST_CACHE (default /var/cache/kata-runtime), KATA_EROFS_COMPRESS ("" = uncompressed,
# the default, measured to boot faster under TCG; or lz4 / lz4hc).
# Runs as root on Debian 12; installs its own build dependencies with apt-get when missing.

set -euo pipefail
umask 022
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
GUEST=$HERE/guest
CACHE=${KATA_GUEST_CACHE:-/var/cache/kata-runtime}
DEBS=$CACHE/debs
OUT=$CACHE/guest
STAGES=$OUT/stage
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
EROFS_COMPRESS=${KATA_EROFS_COMPRESS:-}
ROOT_UUID=6b617461-2d67-7565-7374-2d726f6f7400 # "kata-guest-root"
DEFAULTS_DIR=/usr/share/defaults/kata-containers
PYVER=3.11
DEFAULT_PREFIX=/usr/share/kata-containers
PREFIX=$DEFAULT_PREFIX
INSTALL=0
FORCE=0
KEEP_BUILDS=3 # finished builds kept in $OUT (the newest; older ones are removed)

STEP=0
STEPS=7
T0=$(date +%s.%N)
TMPS=()

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
step() {
	STEP=$((STEP + 1))
	printf '[kata-guest] step %d/%d: %s  [%s s]\n' "$STEP" "$STEPS" "$*" "$(elapsed)"
}
log() { printf '[kata-guest]     %s\n' "$*"; }
die() {
	printf '[kata-guest] error: %s\n' "$*" >&2
	exit 1
}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
cleanup() {
	local t
	for t in "${TMPS[@]}"; do
		[ -n "$t" ] && [ -e "$t" ] && rm -rf --one-file-system "$t"
	done
	return 0
}
hash_stdin() { sha256sum | cut -c1-16; }
hash_files() { # names and contents of the given files, paths as given
	local f
	for f in "$@"; do
		printf '%s\n' "$f"
		sha256sum <"$f"
	done | hash_stdin
}
# name=version -> the .deb in $DEBS (apt-get download names files name_version_arch.deb, ':' as %3a)
deb_file() {
	local name=${1%%=*} ver=${1#*=} f
	for f in "$DEBS/${name}_${ver//:/%3a}_"*.deb; do
		[ -f "$f" ] && { echo "$f"; return 0; }
	done
	return 1
}

# Run a command chrooted into ROOT, with private tmpfs on /tmp and /dev/shm, /dev and /proc (python's
# multiprocessing needs them); everything is unmounted when the private mount namespace ends.
in_root() {
	local root=$1
	shift
	unshare -m --propagation private sh -ec '
		root=$1; shift
		mount -t tmpfs tmpfs "$root/tmp"
		mount --bind /dev "$root/dev"
		mount -t tmpfs tmpfs "$root/dev/shm"
		mount -t proc proc "$root/proc"
		exec chroot "$root" "$@"' sh "$root" "$@"
}

# --- stage: Debian packages -> guest root tree --------------------------------------------------------
# Extracted without maintainer scripts into a merged-/usr tree, stripped of what the agent never uses,
# busybox applet links, /etc basics, ld.so.cache, and the stdlib and dist-packages compiled to .pyc.
stage_root_build() {
	local dir=$1 root=$1/rootfs deb p
	mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
	ln -s usr/bin "$root/bin"
	ln -s usr/sbin "$root/sbin"
	ln -s usr/lib "$root/lib"
	ln -s usr/lib64 "$root/lib64"
	while read -r p; do
		deb=$(deb_file "$p") || die "no .deb for $p"
		dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root" -f -
	done <"$dir/packages.txt"

	# What the agent never needs: docs, manuals, locales, headers, charset converters (glibc iconv;
	# python has its own codecs), debian helper data, python's tests, GUI and packaging tools.
	rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,bug,doc-base,bash-completion,zsh,menu} \
		"$root"/usr/share/{pixmaps,applications,binfmts,gcc,gdb,python3,common-licenses,mime,initramfs-tools} \
		"$root"/usr/include "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/lib/valgrind
	local lib=$root/usr/lib/python$PYVER
	rm -rf "$lib"/{test,idlelib,tkinter,turtledemo,lib2to3,ensurepip,pydoc_data,distutils,venv,__phello__} \
		"$lib"/{turtle.py,unittest/test,ctypes/test,sqlite3/test,tkinter/test} \
		"$lib"/lib-dynload/{_test,_ctypes_test,xxlimited,_xxtestfuzz}*.so \
		"$lib"/config-"$PYVER"-*
	find "$root/usr/lib/python3/dist-packages" -depth -type d \( -name tests -o -name __pycache__ \) \
		-exec rm -rf {} +
	find "$root" -depth -type d -name __pycache__ -exec rm -rf {} +
	find "$root" \( -name '*.a' -o -name '*.la' -o -name '*.pyi' \) -type f -delete
	find "$root/usr/share" -depth -type d -empty -delete

	# busybox applets as symlinks (busybox --install -s, done here): only where no file exists.
	local applet
	for applet in $("$root/usr/bin/busybox" --list-full | grep -v '^linuxrc$'); do
		[ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
	done

	# Mount points and the few files a root needs.
	mkdir -p "$root"/{proc,sys,dev,run,tmp,root,etc,var/lib,opt/kata}
	chmod 1777 "$root/tmp"
	chmod 0700 "$root/root"
	ln -sfn /run "$root/var/run"
	ln -sfn /tmp "$root/var/tmp"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	printf 'kata\n' >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	: >"$root/etc/resolv.conf"
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
	printf 'include /etc/ld.so.conf.d/*.conf\n' >"$root/etc/ld.so.conf"
	ldconfig -X -r "$root"

	"$PY" "$GUEST/guestlib.py" elf-check "$root" >/dev/null || die "shared libraries are missing in the guest root"

	# .pyc for everything, by the guest's own python (compiling under TCG at boot would be very slow).
	in_root "$root" "/usr/bin/python$PYVER" -m compileall -q -j0 --invalidation-mode unchecked-hash \
		"/usr/lib/python$PYVER" /usr/lib/python3/dist-packages >/dev/null || die "compileall failed in the guest root"
}

# --- stage: kernel package -> vmlinux + modules -------------------------------------------------------
stage_kernel_build() {
	local dir=$1 x=$1/pkg kver group path name src
	mkdir -p "$x" "$dir/modules"
	dpkg-deb -x "$(deb_file "$KERNEL_PKG")" "$x" || die "cannot extract $KERNEL_PKG"
	kver=$(cd "$x/lib/modules" && echo *)
	[ -d "$x/lib/modules/$kver" ] || die "kernel package has no single /lib/modules/<version>"
	"$PY" "$GUEST/guestlib.py" extract-vmlinux "$x/boot/vmlinuz-$kver" "$dir/vmlinux" >/dev/null ||
		die "no vmlinux in /boot/vmlinuz-$kver"
	depmod -b "$x" "$kver" || die "depmod failed"
	"$PY" "$GUEST/guestlib.py" module-order "$x/lib/modules/$kver" "$GUEST/modules.list" >"$dir/order.txt" ||
		die "cannot order the modules of guest/modules.list"
	: >"$dir/load.list"
	while read -r group path name; do
		src=$x/lib/modules/$kver/$path
		case "$path" in
		*.ko) cp "$src" "$dir/modules/$name.ko" ;;
		*.ko.xz) xz -dc "$src" >"$dir/modules/$name.ko" ;;
		*.ko.zst) zstd -dcq "$src" >"$dir/modules/$name.ko" ;;
		*.ko.gz) gzip -dc "$src" >"$dir/modules/$name.ko" ;;
		*) die "unknown module file $path" ;;
		esac
		"$PY" "$GUEST/guestlib.py" strip-module-signature "$dir/modules/$name.ko" || die "cannot strip $name.ko"
		printf '%s %s.ko %s\n' "$group" "$name" "$name" >>"$dir/load.list"
	done <"$dir/order.txt"
	echo "$kver" >"$dir/kernel-version"
	rm -rf "$x"
}

# Build a stage into $STAGES/<name>-<key> unless it is there (or --force); print its path.
stage() {
	local name=$1 key=$2 fn=$3 dir=$STAGES/$1-$2 tmp
	if [ -f "$dir/.complete" ] && [ "$FORCE" = 0 ]; then
		touch "$dir" # last use, for gc_builds
		log "cached: $dir"
		return 0
	fi
	tmp=$(mktemp -d "$STAGES/.$name.XXXXXX")
	TMPS+=("$tmp")
	[ "$name" = root ] && cp "$WORK/root-packages.txt" "$tmp/packages.txt"
	"$fn" "$tmp"
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	log "built $dir"
}

# Atomically install one file: copy next to the target, then rename over it (unless it is the same
# already: its mtime keys the runtime's cached KVM verdict).
install_file() {
	local src=$1 dst=$2 mode=$3
	if cmp -s "$src" "$dst"; then
		chmod "$mode" "$dst"
		return 0
	fi
	mkdir -p "$(dirname "$dst")"
	cp "$src" "$dst.tmp.$$"
	chmod "$mode" "$dst.tmp.$$"
	mv -f "$dst.tmp.$$" "$dst"
}

main() {
	while [ $# -gt 0 ]; do
		case "$1" in
		--install) INSTALL=1 ;;
		--force) FORCE=1 ;;
		--prefix) [ $# -ge 2 ] || { usage >&2; exit 2; }; PREFIX=$2; shift ;;
		--prefix=*) PREFIX=${1#--prefix=} ;;
		-h | --help) usage; exit 0 ;;
		*) echo "build-guest.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
		esac
		shift
	done
	[ "$INSTALL" = 1 ] && STEPS=8
	case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
	[ "$(id -u)" = 0 ] || die "must run as root (extracts packages with their owners, chroots to compile)"
	[ -r /etc/debian_version ] || die "needs a Debian 12 host (apt-get, dpkg-deb)"
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	# --- 1 ---
	step "build dependencies"
	local need_pkgs=() pair
	for pair in mkfs.erofs:erofs-utils cpio:cpio xz:xz-utils zstd:zstd depmod:kmod python3:python3 \
		dpkg-deb:dpkg unshare:util-linux ldconfig:libc-bin sha256sum:coreutils; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
	done
	local policy
	policy=$(apt-cache policy linux-image-amd64 2>/dev/null || true)
	if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
		log "apt lists are empty: apt-get update"
		apt-get update -qq || die "apt-get update failed"
	fi
	if [ ${#need_pkgs[@]} -gt 0 ]; then
		log "apt-get install ${need_pkgs[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" \
			>/dev/null || die "cannot install ${need_pkgs[*]}"
	else
		log "all present"
	fi
	PY=python3
	[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
	mkdir -p "$DEBS" "$STAGES"
	exec 9>"$OUT/.lock"
	flock 9 # one build at a time on this machine: the cache is shared
	# With the lock held, temporary dirs left here are from builds that were killed.
	rm -rf "$OUT"/.work.* "$OUT"/.build.* "$STAGES"/.root.* "$STAGES"/.kernel.* "$DEBS"/.dl.*

	# --- 2 ---
	step "resolve package versions, hash the inputs"
	WORK=$(mktemp -d "$OUT/.work.XXXXXX")
	TMPS+=("$WORK")
	"$PY" "$GUEST/guestlib.py" resolve "$GUEST/packages.list" >"$WORK/resolved.txt" ||
		die "cannot resolve the guest packages (apt-get update?)"
	grep -v '^kernel ' "$WORK/resolved.txt" >"$WORK/root-packages.txt"
	KERNEL_PKG=$(sed -n 's/^kernel //p' "$WORK/resolved.txt")
	[ -n "$KERNEL_PKG" ] || die "no kernel package resolved"
	case "$KERNEL_PKG" in *-cloud-amd64=*) die "resolved a -cloud kernel ($KERNEL_PKG): it has no 9p" ;; esac
	log "$(wc -l <"$WORK/root-packages.txt") root packages; kernel $KERNEL_PKG"
	# Each stage's key: its packages and the functions that build it (declare -f prints them).
	local root_key kernel_key agent_files hash dest
	root_key=$({
		cat "$WORK/root-packages.txt"
		declare -f stage_root_build in_root deb_file
		sha256sum <"$GUEST/guestlib.py"
	} | hash_stdin)
	kernel_key=$({
		echo "$KERNEL_PKG"
		declare -f stage_kernel_build deb_file
		cat "$GUEST/modules.list"
		sha256sum <"$GUEST/guestlib.py"
	} | hash_stdin)
	cd "$REPO"
	mapfile -t agent_files < <(
		{
			echo kata_runtime/__init__.py
			find kata_runtime/protocol kata_runtime/guest -name '*.py' -type f 2>/dev/null
		} | sort
	)
	[ -f kata_runtime/protocol/generated/agent_pb2_grpc.py ] || die "kata_runtime/protocol/generated/ is missing"
	hash=$({
		echo "root $root_key kernel $kernel_key epoch $EPOCH erofs ${EROFS_COMPRESS:-none}"
		hash_files packaging/build-guest.sh packaging/configuration.toml.in \
			$(find packaging/guest -type f ! -name '*.pyc' | sort)
		hash_files "${agent_files[@]}"
	} | hash_stdin)
	dest=$OUT/$hash
	log "build $hash (root stage $root_key, kernel stage $kernel_key, ${#agent_files[@]} agent files)"

	if [ -f "$dest/.complete" ] && [ "$FORCE" = 0 ]; then
		STEP=$((STEP + 5))
		touch "$dest" # last use, for gc_builds
		log "cached: $dest (steps 3-7 skipped; --force rebuilds)"
	else
		build_all "$dest" "$root_key" "$kernel_key" "${agent_files[@]}"
	fi
	ln -sfn "$hash" "$OUT/.latest.tmp"
	mv -Tf "$OUT/.latest.tmp" "$OUT/latest"
	gc_builds "$hash"

	if [ "$INSTALL" = 1 ]; then
		step "install to $PREFIX and $DEFAULTS_DIR/configuration.toml"
		install_file "$dest/vmlinux.container" "$PREFIX/vmlinux.container" 0644
		install_file "$dest/kata-containers-initrd.img" "$PREFIX/kata-containers-initrd.img" 0644
		install_file "$dest/kata-containers.img" "$PREFIX/kata-containers.img" 0644
		sed "s|@PREFIX@|$PREFIX|g" "$REPO/packaging/configuration.toml.in" >"$WORK/configuration.toml"
		install_file "$WORK/configuration.toml" "$DEFAULTS_DIR/configuration.toml" 0644
		log "installed $PREFIX/{vmlinux.container,kata-containers-initrd.img,kata-containers.img}"
		log "installed $DEFAULTS_DIR/configuration.toml"
	fi
	log "done in $(elapsed) s: $dest"
	local f
	for f in vmlinux.container kata-containers-initrd.img kata-containers.img configuration.toml; do
		printf '[kata-guest]     %-28s %11d bytes (%s MiB)\n' "$f" "$(stat -c %s "$dest/$f")" \
			"$(awk -v n="$(stat -c %s "$dest/$f")" 'BEGIN { printf "%.1f", n / 1048576 }')"
	done
	echo "$dest"
}

build_all() {
	local dest=$1 root_key=$2 kernel_key=$3 f
	shift 3
	local rstage=$STAGES/root-$root_key kstage=$STAGES/kernel-$kernel_key

	# --- 3 ---
	step "download .debs (cache: $DEBS)"
	local missing=() p
	while read -r p; do
		deb_file "$p" >/dev/null || missing+=("$p")
	done < <(cat "$WORK/root-packages.txt"; echo "$KERNEL_PKG")
	if [ ${#missing[@]} -gt 0 ]; then
		log "apt-get download ${#missing[@]} packages"
		local dl
		dl=$(mktemp -d "$DEBS/.dl.XXXXXX")
		TMPS+=("$dl")
		(cd "$dl" && apt-get -q -o APT::Sandbox::User=root download "${missing[@]}" >/dev/null) ||
			die "apt-get download failed: ${missing[*]}"
		mv "$dl"/*.deb "$DEBS/"
	fi
	while read -r p; do
		deb_file "$p" >/dev/null || die "no .deb for $p after download"
	done < <(cat "$WORK/root-packages.txt"; echo "$KERNEL_PKG")
	log "$(($(wc -l <"$WORK/root-packages.txt") + 1)) packages present"

	# --- 4 ---
	step "guest root tree from the packages (stage cache)"
	stage root "$root_key" stage_root_build

	# --- 5 ---
	step "kernel: vmlinux and modules (stage cache)"
	stage kernel "$kernel_key" stage_kernel_build
	log "kernel $(cat "$kstage/kernel-version"), modules: $(awk '{ printf "%s ", $3 }' "$kstage/load.list")"

	local build
	build=$(mktemp -d "$OUT/.build.XXXXXX")
	TMPS+=("$build")

	# --- 6 ---
	step "initrd: busybox, modules, /init"
	local ird=$build/initrd
	mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,newroot,lib/modules}
	cp "$rstage/rootfs/usr/bin/busybox" "$ird/bin/busybox"
	local applet
	for applet in $("$ird/bin/busybox" --list-full | grep -v '^linuxrc$'); do
		[ -e "$ird/$applet" ] || ln -s /bin/busybox "$ird/$applet"
	done
	install -m 0755 "$GUEST/init" "$ird/init"
	cp "$kstage"/modules/*.ko "$kstage/load.list" "$ird/lib/modules/"
	mknod -m 0600 "$ird/dev/console" c 5 1
	find "$ird" -exec touch -h -d "@$EPOCH" {} +
	(cd "$ird" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
		>"$build/kata-containers-initrd.img"

	# --- 7 ---
	step "root image: agent sources, compileall, mkfs.erofs${EROFS_COMPRESS:+ -z$EROFS_COMPRESS}"
	local root=$build/rootfs
	cp -al "$rstage/rootfs" "$root" # hard links: only new files are written below
	for f in "$@"; do
		install -D -m 0644 "$REPO/$f" "$root/opt/kata/$f"
	done
	install -m 0755 "$GUEST/kata-agent" "$root/opt/kata/kata-agent"
	in_root "$root" "/usr/bin/python$PYVER" -m compileall -q -j0 --invalidation-mode unchecked-hash \
		/opt/kata/kata_runtime >/dev/null
	in_root "$root" "/usr/bin/python$PYVER" -S -B -c '
import sys
sys.path[:0] = ["/opt/kata", "/usr/lib/python3/dist-packages"]
import grpc, google.protobuf, kata_runtime.protocol.generated.agent_pb2_grpc' ||
		die "the guest python cannot import grpc / protobuf / the generated agent protocol"
	if [ -f "$root/opt/kata/kata_runtime/guest/agent.py" ]; then
		in_root "$root" "/usr/bin/python$PYVER" -S -B -c '
import sys
sys.path[:0] = ["/opt/kata", "/usr/lib/python3/dist-packages"]
import kata_runtime.guest.agent' || log "WARNING: the guest python cannot import kata_runtime.guest.agent"
	fi
	local zopt=()
	[ -n "$EROFS_COMPRESS" ] && zopt=("-z$EROFS_COMPRESS")
	mkfs.erofs --quiet "${zopt[@]}" -T"$EPOCH" -U"$ROOT_UUID" --all-root -x-1 \
		"$build/kata-containers.img" "$root"
	rm -rf "$root" "$ird"

	cp "$kstage/vmlinux" "$build/vmlinux.container"
	sed "s|@PREFIX@|$DEFAULT_PREFIX|g" "$REPO/packaging/configuration.toml.in" >"$build/configuration.toml"
	{
		echo "kernel $KERNEL_PKG ($(cat "$kstage/kernel-version"))"
		echo "modules $(awk '{ printf "%s ", $3 }' "$kstage/load.list")"
		echo "root stage $root_key; kernel stage $kernel_key; erofs ${EROFS_COMPRESS:-uncompressed}"
		echo "SOURCE_DATE_EPOCH $EPOCH"
		echo "packages:"
		sed 's/^/  /' "$WORK/root-packages.txt"
		echo "agent files:"
		printf '  %s\n' "$@"
		echo "sha256:"
		(cd "$build" && sha256sum vmlinux.container kata-containers-initrd.img kata-containers.img) | sed 's/^/  /'
	} >"$build/manifest.txt"
	touch "$build/.complete"
	rm -rf "$dest"
	mv "$build" "$dest"
}

# Keep the newest $KEEP_BUILDS finished builds (and the current one); remove stage dirs no build uses.
gc_builds() {
	local current=$1 d n=0
	for d in $(ls -1td "$OUT"/*/ 2>/dev/null); do
		d=${d%/}
		case "$(basename "$d")" in stage | latest) continue ;; esac
		[ -f "$d/.complete" ] || continue
		n=$((n + 1))
		if [ "$n" -gt "$KEEP_BUILDS" ] && [ "$(basename "$d")" != "$current" ]; then
			rm -rf "$d"
		fi
	done
	# stage dirs: keep the newest two of each kind
	for kind in root kernel; do
		n=0
		for d in $(ls -1td "$STAGES/$kind"-*/ 2>/dev/null); do
			n=$((n + 1))
			[ "$n" -gt 2 ] && rm -rf "${d%/}"
		done
	done
	return 0
}

main "$@"
