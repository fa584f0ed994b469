# shellcheck shell=bash
# Private containerd and dockerd for the bats files, with kata-runtime as a runtime of both.
#
#   load engines            # in a .bats file (top level: the functions are needed by every test)
#   setup_file()    { engines_start; make_busybox_image; }
#   teardown_file() { engines_stop; }
#
# All state lives in one directory, ENGINE_DIR (/tmp/kata-engines.XXXXXX): the kata configuration
# (a copy of the installed one with VM templates on, template under ENGINE_DIR), containerd's root,
# state, socket and v1 runtime root, dockerd's data-root and exec-root, logs, pid files. dockerd gets
# a bridge of its own (kbr-XXXXXX, a free 10.213.N.0/24), no iptables and no ip forwarding: nothing
# a container sends leaves the machine.
#
# Exported for the tests: ENGINE_DIR, KATA (the runtime; override it from the environment),
# KATA_CONF_FILE (the test configuration: kata-runtime called by the engines' shims inherits it),
# DOCKER (/usr/bin/docker; /usr/local/bin/docker is another client), DOCKER_HOST, CTR ("ctr
# --address ...": use it unquoted), CTR_ADDRESS, CTR_NS (kata-test), KATA_IMAGE (docker's name of
# the busybox image), CTR_IMAGE (containerd's), ENGINE_BRIDGE, ENGINE_GATEWAY.
# Environment knobs: KATA, KATA_SOURCE_CONF (configuration to copy), ENGINES_NO_TEMPLATE=1 (cold
# boots), ENGINES_STORAGE_DRIVER (overlay2, falls back to vfs), LEFTOVERS_GRACE (seconds, 5).

: "${KATA:=/opt/kata-runtime/venv/bin/kata-runtime}"
DOCKER=/usr/bin/docker
: "${CTR_NS:=kata-test}"
KATA_IMAGE=kata-busybox:latest
CTR_IMAGE=docker.io/library/kata-busybox:latest
ENGINES_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib"
export KATA DOCKER CTR_NS KATA_IMAGE CTR_IMAGE ENGINES_LIB

_engines_say() { echo "engines: $*" >&2; }

# ---------------------------------------------------------------------------------------- helpers

# true when pid runs and its command line mentions ENGINE_DIR (so a reused pid is never ours)
_engines_ours_alive() {
  local pid=${1:-}
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$ENGINE_DIR"
}

# _engines_child_alive PID: a daemon this shell just started in the background is still there. Not
# _engines_ours_alive: until its subshell has exec'd, its command line is this shell's, not the
# daemon's (a start that checked too early said "exited"); our own child's pid is not reused
# before we reap it.
_engines_child_alive() {
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

_engines_pid() { cat "$ENGINE_DIR/$1.pid" 2>/dev/null || true; }

# _engines_term NAME SECONDS: SIGTERM the daemon of pid file NAME.pid, wait, then SIGKILL
_engines_term() {
  local name=$1 secs=$2 pid i
  pid=$(_engines_pid "$name")
  _engines_ours_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    _engines_ours_alive "$pid" || return 0
    sleep 0.1
  done
  _engines_say "$name (pid $pid) ignored SIGTERM for ${secs}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    _engines_ours_alive "$pid" || return 0
    sleep 0.1
  done
}

# mount points at or under $1, one a line, deepest first
_engines_mounts_under() {
  awk -v d="$1" '{ mp = $5; gsub(/\\040/, " ", mp); if (mp == d || index(mp, d "/") == 1) print mp }' \
    /proc/self/mountinfo | sort -r
}

# processes started (directly or not) by these engines: pid and command line, one a line.
# $1: the program names to look for (globs, space-separated), matched against the base names of
# the first three words of the command line (so that "python3 -S .../kata-shim" is a kata-shim).
# A process is ours when its command line or its environment (KATA_CONF_FILE, inherited from
# containerd) names ENGINE_DIR.
_engines_our_processes() {
  local f pid a pat
  local -a argv pats
  read -ra pats <<<"$1"
  # one grep over every process's command line and environment, then the names
  while read -r f; do
    pid=${f#/proc/}
    pid=${pid%%/*}
    [ "$pid" != $$ ] && [ "$pid" != "${BASHPID:-}" ] || continue
    mapfile -d '' -t argv 2>/dev/null <"/proc/$pid/cmdline" || continue
    [ "${#argv[@]}" -gt 0 ] || continue
    for a in "${argv[@]:0:3}"; do
      for pat in "${pats[@]}"; do
        # shellcheck disable=SC2053
        if [[ ${a##*/} == $pat ]]; then
          echo "$pid ${argv[*]}"
          continue 3
        fi
      done
    done
  done < <(grep -laF -- "$ENGINE_DIR" /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null |
    awk -F/ '!seen[$3]++')
}

_ENGINES_KATA_NAMES='qemu-system-* kata-proxy kata-shim'
_ENGINES_ALL_NAMES='qemu-system-* kata-proxy kata-shim kata-runtime containerd-shim* containerd dockerd ctr'

# ------------------------------------------------------------------------------- kata configuration

_engines_write_kata_conf() {
  local src=${KATA_SOURCE_CONF:-}
  if [ -z "$src" ]; then
    if [ -f /etc/kata-containers/configuration.toml ]; then
      src=/etc/kata-containers/configuration.toml
    else
      src=/usr/share/defaults/kata-containers/configuration.toml
    fi
  fi
  local enable=true
  [ "${ENGINES_NO_TEMPLATE:-0}" = 1 ] && enable=false
  python3 - "$src" "$ENGINE_DIR/kata.toml" "$enable" "$ENGINE_DIR/template" <<'EOF' || return 1
import re, sys
src, dst, enable, path = sys.argv[1:]
text = open(src).read()
lines, out, section, done = text.splitlines(), [], None, set()
def factory_keys():
    return [f"enable_template = {enable}", f'template_path = "{path}"']
for line in lines:
    m = re.match(r"\s*\[([^\]]+)\]", line)
    if m:
        if section == "factory" and "factory" not in done:
            out += factory_keys(); done.add("factory")
        section = m.group(1).strip()
    if section == "factory" and re.match(r"\s*(enable_template|template_path)\s*=", line):
        continue
    out.append(line)
if section == "factory" and "factory" not in done:
    out += factory_keys(); done.add("factory")
if "factory" not in done:
    out += ["", "[factory]"] + factory_keys()
open(dst, "w").write("\n".join(out) + "\n")
EOF
}

_engines_factory_init() {
  [ "${ENGINES_NO_TEMPLATE:-0}" = 1 ] && return 0
  if ! timeout 180 "$KATA" factory init >"$ENGINE_DIR/factory-init.log" 2>&1 </dev/null 3>&-; then
    _engines_say "kata-runtime factory init failed (VMs will boot cold): $(tail -n 3 "$ENGINE_DIR/factory-init.log")"
  fi
}

# ------------------------------------------------------------------------------------- containerd

_engines_write_containerd_conf() {
  local d=$ENGINE_DIR/containerd
  mkdir -p "$d/root" "$d/state" "$d/opt" "$d/runtime-v1"
  cat >"$ENGINE_DIR/containerd.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$ENGINE_DIR/containerd.sock"

[ttrpc]
  address = "$ENGINE_DIR/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.runtime.v1.linux"]
  runtime = "$KATA"
  shim = "containerd-shim"
  runtime_root = "$d/runtime-v1"
EOF
}

_engines_containerd_answers() { timeout 10 $CTR version >/dev/null 2>&1; }

_engines_start_containerd() {
  (cd / && exec containerd --config "$ENGINE_DIR/containerd.toml") \
    </dev/null >>"$ENGINE_DIR/containerd.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  echo $! >"$ENGINE_DIR/containerd.pid"
  local i pid=$!
  for ((i = 0; i < 300; i++)); do
    _engines_containerd_answers && return 0
    if ! _engines_child_alive "$pid"; then
      _engines_say "containerd exited: $(tail -n 5 "$ENGINE_DIR/containerd.log")"
      return 1
    fi
    sleep 0.1
  done
  _engines_say "containerd does not answer after 30s: $(tail -n 5 "$ENGINE_DIR/containerd.log")"
  return 1
}

engines_restart_containerd() {
  _engines_term containerd 30
  _engines_term events 5
  _engines_start_containerd && _engines_start_events
}

# --------------------------------------------------------------------------------------- dockerd

_engines_setup_bridge() {
  local n br=kbr-${ENGINE_DIR##*.}
  for ((n = 7; n < 255; n++)); do
    ip -4 -o addr show | grep -q " 10\.213\.$n\." && continue
    ip -4 route show | grep -q "^10\.213\.$n\." && continue
    break
  done
  [ "$n" -lt 255 ] || { _engines_say "no free 10.213.N.0/24"; return 1; }
  ip link add "$br" type bridge || return 1
  echo "$br" >"$ENGINE_DIR/bridge"
  ip addr add "10.213.$n.1/24" dev "$br" && ip link set "$br" up || return 1
  ENGINE_BRIDGE=$br
  ENGINE_GATEWAY=10.213.$n.1
  export ENGINE_BRIDGE ENGINE_GATEWAY
  # dockerd is told not to forward (ip-forward false, no iptables); if the host forwards anyway,
  # drop whatever the bridge would route off the machine (frames between the bridge's own ports,
  # which br_netfilter also shows to FORWARD, stay allowed: containers talk to each other).
  if [ "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)" != 0 ] && command -v iptables >/dev/null; then
    iptables -I FORWARD -i "$br" ! -o "$br" -j DROP && echo "FORWARD -i $br ! -o $br -j DROP" >>"$ENGINE_DIR/iptables"
    iptables -I FORWARD -o "$br" ! -i "$br" -j DROP && echo "FORWARD -o $br ! -i $br -j DROP" >>"$ENGINE_DIR/iptables"
  fi
}

_engines_remove_bridge() {
  local rule br
  if [ -f "$ENGINE_DIR/iptables" ]; then
    while read -r rule; do
      # shellcheck disable=SC2086
      iptables -D $rule 2>/dev/null || true
    done <"$ENGINE_DIR/iptables"
    rm -f "$ENGINE_DIR/iptables"
  fi
  br=$(cat "$ENGINE_DIR/bridge" 2>/dev/null) || return 0
  [ -n "$br" ] && ip link show "$br" >/dev/null 2>&1 && ip link del "$br"
  rm -f "$ENGINE_DIR/bridge"
}

_engines_write_dockerd_conf() {
  local driver=$1
  cat >"$ENGINE_DIR/daemon.json" <<EOF
{
  "data-root": "$ENGINE_DIR/docker-data",
  "exec-root": "$ENGINE_DIR/docker-exec-root",
  "pidfile": "$ENGINE_DIR/dockerd.pid",
  "hosts": ["unix://$ENGINE_DIR/docker.sock"],
  "containerd": "$ENGINE_DIR/containerd.sock",
  "storage-driver": "$driver",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "userland-proxy": true,
  "bridge": "$ENGINE_BRIDGE",
  "default-address-pools": [{"base": "10.214.0.0/16", "size": 24}],
  "live-restore": true,
  "log-driver": "json-file",
  "runtimes": {"kata": {"path": "$KATA"}}
}
EOF
}

_engines_docker_answers() { timeout 10 "$DOCKER" info >/dev/null 2>&1; }

_engines_start_dockerd() {
  rm -f "$ENGINE_DIR/dockerd.pid"
  (cd / && exec dockerd --config-file "$ENGINE_DIR/daemon.json") \
    </dev/null >>"$ENGINE_DIR/dockerd.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  local i pid=$!
  for ((i = 0; i < 600; i++)); do
    if _engines_docker_answers; then
      echo "$pid" >"$ENGINE_DIR/dockerd.pid"  # the same pid dockerd wrote; makes sure it is there
      return 0
    fi
    if ! _engines_child_alive "$pid"; then
      _engines_say "dockerd exited: $(tail -n 5 "$ENGINE_DIR/dockerd.log")"
      return 1
    fi
    sleep 0.1
  done
  _engines_say "dockerd does not answer after 60s: $(tail -n 5 "$ENGINE_DIR/dockerd.log")"
  echo "$pid" >"$ENGINE_DIR/dockerd.pid"
  return 1
}

engines_restart_dockerd() {
  _engines_term dockerd 30
  _engines_start_dockerd
}

# ----------------------------------------------------------------------------------- start / stop

# engines_start [containerd] [docker]   (default: both; docker needs containerd)
engines_start() {
  local want=${*:-containerd docker}
  if [ -n "${ENGINE_DIR:-}" ] && [ -d "$ENGINE_DIR" ]; then
    _engines_say "already started in $ENGINE_DIR"
    return 1
  fi
  ENGINE_DIR=$(mktemp -d /tmp/kata-engines.XXXXXX) || return 1
  chmod 711 "$ENGINE_DIR"
  KATA_CONF_FILE=$ENGINE_DIR/kata.toml
  CTR_ADDRESS=$ENGINE_DIR/containerd.sock
  CTR="ctr --address $CTR_ADDRESS"
  DOCKER_HOST=unix://$ENGINE_DIR/docker.sock
  export ENGINE_DIR KATA_CONF_FILE CTR_ADDRESS CTR DOCKER_HOST
  touch "$ENGINE_DIR/started"
  _engines_mounts_under /run/vc >"$ENGINE_DIR/run-vc-mounts.before"

  _engines_write_kata_conf || { _engines_say "cannot write $KATA_CONF_FILE"; return 1; }
  _engines_factory_init

  _engines_write_containerd_conf
  _engines_start_containerd || return 1
  _engines_start_events

  if [[ " $want " == *" docker "* ]]; then
    _engines_setup_bridge || { _engines_say "cannot create the docker bridge"; return 1; }
    local driver=${ENGINES_STORAGE_DRIVER:-overlay2}
    _engines_write_dockerd_conf "$driver"
    if ! _engines_start_dockerd; then
      [ "$driver" = overlay2 ] || return 1
      _engines_say "dockerd with overlay2 failed; trying vfs"
      _engines_term dockerd 10
      _engines_write_dockerd_conf vfs
      _engines_start_dockerd || return 1
    fi
  fi
  _engines_mounts_under "$ENGINE_DIR" >"$ENGINE_DIR/mounts.baseline"
}

_engines_remove_everything() {
  local ids ns t c
  if _engines_ours_alive "$(_engines_pid dockerd)" && _engines_docker_answers; then
    ids=$(timeout 30 "$DOCKER" ps -aq 2>/dev/null)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || timeout 180 "$DOCKER" rm -f $ids >/dev/null 2>&1 || _engines_say "docker rm -f failed"
    ids=$(timeout 30 "$DOCKER" volume ls -q 2>/dev/null)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || timeout 60 "$DOCKER" volume rm -f $ids >/dev/null 2>&1 || true
  fi
  if _engines_ours_alive "$(_engines_pid containerd)" && _engines_containerd_answers; then
    for ns in $(timeout 30 $CTR namespaces ls -q 2>/dev/null); do
      for t in $(timeout 30 $CTR -n "$ns" tasks ls -q 2>/dev/null); do
        timeout 30 $CTR -n "$ns" tasks kill --all -s SIGKILL "$t" >/dev/null 2>&1 || true
      done
      for t in $(timeout 30 $CTR -n "$ns" tasks ls -q 2>/dev/null); do
        timeout 60 $CTR -n "$ns" tasks delete --force "$t" >/dev/null 2>&1 || true
      done
      for c in $(timeout 30 $CTR -n "$ns" containers ls -q 2>/dev/null); do
        timeout 60 $CTR -n "$ns" containers delete "$c" >/dev/null 2>&1 || true
      done
    done
  fi
}

# what the runtime left of these engines' containers outside ENGINE_DIR (by container id: under
# /run/vc and /run/kata-containers, and their socket directories): unmounted and removed, so
# that a leak of one run does not show up in the next run or in another test session
_engines_clean_runtime_traces() {
  local ns id e mp
  while read -r ns id; do
    [ -n "$id" ] || continue
    for e in /run/vc/*/"$id" /run/kata-containers/*/"$id" /run/kata-containers/*/*/"$id" \
      /run/vc/sock/$(printf '%s\0%s' "$ENGINE_DIR/docker-exec-root/runtime-runc/$ns" "$id" | sha256sum | cut -c1-24) \
      /run/vc/sock/$(printf '%s\0%s' "$ENGINE_DIR/docker-exec-root/runtime-kata/$ns" "$id" | sha256sum | cut -c1-24) \
      /run/vc/sock/$(printf '%s\0%s' "$ENGINE_DIR/containerd/runtime-v1/$ns" "$id" | sha256sum | cut -c1-24); do
      [ -e "$e" ] || continue
      _engines_say "removing what the runtime left: $e"
      for mp in $(_engines_mounts_under "$e"); do
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
      done
      rm -rf "$e"
    done
  done < <(_engines_known_containers)
}

# engines_stop: everything down and away; safe to call twice and after a partial start
engines_stop() {
  [ -n "${ENGINE_DIR:-}" ] && [ -d "$ENGINE_DIR" ] || return 0
  case $ENGINE_DIR in
    /tmp/kata-engines.?*) ;;
    *) _engines_say "refusing to clean up ENGINE_DIR=$ENGINE_DIR"; return 1 ;;
  esac
  local line pid mp i
  _engines_remove_everything
  _engines_term dockerd 30
  _engines_term containerd 30
  _engines_term events 5

  # anything still running that these engines started: shims, VMs, a hung kata-runtime
  for i in 1 2; do
    while read -r pid line; do
      [ -n "$pid" ] || continue
      _engines_say "killing leftover $pid: $line"
      kill -KILL "$pid" 2>/dev/null || true
    done < <(_engines_our_processes "$_ENGINES_ALL_NAMES")
    sleep 0.3
  done

  if [ -f "$ENGINE_DIR/kata.toml" ] && [ "${ENGINES_NO_TEMPLATE:-0}" != 1 ]; then
    timeout 60 "$KATA" factory destroy >/dev/null 2>&1 </dev/null 3>&- || _engines_say "factory destroy failed"
  fi

  for i in 1 2 3 4 5; do
    mp=$(_engines_mounts_under "$ENGINE_DIR")
    [ -n "$mp" ] || break
    while read -r line; do
      umount "$line" 2>/dev/null || umount -l "$line" 2>/dev/null || true
    done <<<"$mp"
  done
  mp=$(_engines_mounts_under "$ENGINE_DIR")
  [ -z "$mp" ] || _engines_say "still mounted: $mp"
  _engines_clean_runtime_traces

  _engines_remove_bridge
  # the runc v2 shim's state root of ctr's runc tasks (fixed path; empty once they are gone)
  rmdir "/run/containerd/runc/$CTR_NS" 2>/dev/null || true
  rm -rf "$ENGINE_DIR" || _engines_say "cannot remove $ENGINE_DIR"
  unset ENGINE_DIR
}

# ---------------------------------------------------------------------------------------- images

_engines_busybox_rootfs_tar() {
  local d=$ENGINE_DIR/image r a
  [ -f "$d/rootfs.tar" ] && return 0
  r=$d/rootfs
  mkdir -p "$r"/{bin,dev,etc,proc,sys,tmp,root,var,run,usr/bin,usr/sbin,sbin}
  chmod 1777 "$r/tmp"
  chmod 700 "$r/root"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$d/rootfs.tar" .
}

# make_busybox_image: kata-busybox:latest in docker and docker.io/library/kata-busybox:latest in
# containerd's namespace $CTR_NS, both a busybox rootfs with CMD ["sh"]
make_busybox_image() {
  _engines_busybox_rootfs_tar || return 1
  local d=$ENGINE_DIR/image
  if _engines_ours_alive "$(_engines_pid dockerd)"; then
    "$DOCKER" import --change 'CMD ["sh"]' - "$KATA_IMAGE" <"$d/rootfs.tar" >/dev/null || return 1
  fi
  if _engines_ours_alive "$(_engines_pid containerd)"; then
    python3 "$ENGINES_LIB/oci-archive.py" "$d/rootfs.tar" "$CTR_IMAGE" "$d/oci.tar" sh || return 1
    $CTR -n "$CTR_NS" images import "$d/oci.tar" >/dev/null || return 1
  fi
}

# ------------------------------------------------------------------------------------- leftovers

# containerd's events, all namespaces (docker's "moby" too): the ids of every container these
# engines ever made, so that leftovers can look for their traces by id
_engines_start_events() {
  (cd / && exec ctr --address "$CTR_ADDRESS" events) \
    </dev/null >>"$ENGINE_DIR/events.log" 2>/dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  echo $! >"$ENGINE_DIR/events.pid"
}

# "namespace id" of every container created so far ($1: only those after that line of the log)
_engines_known_containers() {
  tail -n +"$((${1:-0} + 1))" "$ENGINE_DIR/events.log" 2>/dev/null |
    sed -n 's|.* UTC \([^ ]*\) /containers/create {"id":"\([^"]*\)".*|\1 \2|p' | sort -u
}

_engines_live_containers() {
  local ns
  for ns in $(timeout 30 $CTR namespaces ls -q 2>/dev/null); do
    timeout 30 $CTR -n "$ns" containers ls -q 2>/dev/null | sed "s|^|$ns |"
  done
}

# leftovers_mark: from now on, leftovers looks only at the containers made after this call (and
# at what it cannot tie to any container); the .bats files call it in setup(), so that a test
# answers for its own containers and not for an earlier test's. LEFTOVERS_SCOPE=all: everything.
leftovers_mark() {
  wc -l <"$ENGINE_DIR/events.log" >"$ENGINE_DIR/leftovers.mark" 2>/dev/null || true
}

# prints its input lines that name a container of the scope ($_LO_MINE), or no container at all
# ($_LO_KNOWN are all the containers ever made)
_engines_attributed() {
  local line id mine
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    mine=unknown
    for id in $_LO_KNOWN; do
      [[ $line == *"$id"* ]] || continue
      mine=other
      [[ " $_LO_MINE " == *" $id "* ]] && { mine=yes; break; }
    done
    [ "$mine" = other ] || printf '%s\n' "$line"
  done
}

_engines_leftovers_once() {
  local line mp e ns id mark=0
  [ "${LEFTOVERS_SCOPE:-}" = all ] || mark=$(cat "$ENGINE_DIR/leftovers.mark" 2>/dev/null || echo 0)
  _LO_KNOWN=$(_engines_known_containers | awk '{ print $2 }')
  # containers of the scope that are gone
  _LO_MINE=$(comm -23 <(_engines_known_containers "$mark") <(_engines_live_containers | sort -u) | awk '{ print $2 }')
  {
    _engines_our_processes "$_ENGINES_KATA_NAMES containerd-shim*" | sed 's/^/process: /'
    # the runtime's mounts that name this run (a source, root or overlay layer under ENGINE_DIR)
    # or a container of it, and mounts under ENGINE_DIR that were not there when no container was
    while read -r line; do
      [ -n "$line" ] || continue
      mp=$(awk '{ print $5 }' <<<"$line")
      if [[ $line == *"$ENGINE_DIR"* ]]; then
        echo "mount: $mp"
        continue
      fi
      for id in $_LO_KNOWN; do
        [[ $mp == */"$id"/* || $mp == */"$id" ]] && { echo "mount: $mp"; break; }
      done
    done < <(awk '$5 ~ "^/run/(vc|kata-containers)(/|$)"' /proc/self/mountinfo)
    while read -r mp; do
      [ -n "$mp" ] || continue
      # dockerd's own namespace of the default network (made with the first bridged container)
      [ "$mp" = "$ENGINE_DIR/docker-exec-root/netns/default" ] && continue
      grep -qxF -- "$mp" "$ENGINE_DIR/mounts.baseline" || echo "mount: $mp"
    done < <(_engines_mounts_under "$ENGINE_DIR")
    # kata state under the roots the engines give (docker: <exec-root>/runtime-*/moby,
    # containerd v1: <runtime_root>/<namespace>) and, by container id, under /run/vc and
    # /run/kata-containers (and the socket directory /run/vc/sock/<digest of root and id>)
    for e in "$ENGINE_DIR"/docker-exec-root/runtime-*/*/{sbs,vm}/* "$ENGINE_DIR"/containerd/runtime-v1/*/{sbs,vm}/*; do
      [ -e "$e" ] && echo "state: $e"
    done
    for id in $_LO_KNOWN; do
      for e in /run/vc/*/"$id" /run/kata-containers/*/"$id" /run/kata-containers/*/*/"$id"; do
        [ -e "$e" ] && echo "state: $e"
      done
    done
    while read -r ns id; do
      [ -n "$id" ] || continue
      for e in "$ENGINE_DIR"/docker-exec-root/runtime-*/"$ns" "$ENGINE_DIR/containerd/runtime-v1/$ns"; do
        e=/run/vc/sock/$(printf '%s\0%s' "$e" "$id" | sha256sum | cut -c1-24)
        [ -e "$e" ] && echo "state: $e (sockets of $id)"
      done
    done < <(_engines_known_containers)
  } | _engines_attributed
}

# leftovers: prints every QEMU, kata-proxy, kata-shim, containerd-shim, mount and kata state of
# these engines' containers that are gone (since leftovers_mark) and everything of these engines
# that belongs to no container; nothing when all is clean. Waits up to LEFTOVERS_GRACE seconds
# (5) for things that are going away.
leftovers() {
  local out i grace=${LEFTOVERS_GRACE:-5}
  for ((i = 0; i <= grace * 2; i++)); do
    out=$(_engines_leftovers_once)
    [ -z "$out" ] && return 0
    sleep 0.5
  done
  printf '%s\n' "$out"
}

# ------------------------------------------------------------------------------- for the tests

# run_show CMD...: bats' run, then the output on the test's stdout (bats shows it when a test fails)
run_show() {
  run "$@"
  printf '# status %s: %s\n' "$status" "$*"
  printf '%s\n' "$output"
}

# newid: a 64-hex-character id, as the engines make
newid() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# in_pty CMD: CMD (a shell command line) on a real terminal of 40 rows and 100 columns (script(1))
in_pty() {
  script -qec "stty rows 40 cols 100; $1" /dev/null </dev/null
}

# a shell command line for the container: prints its tty, then the terminal's size once the engine
# has set it (docker and ctr resize the terminal after the process started; busybox's stty prints
# nothing and exits 0 while the size is 0x0)
# shellcheck disable=SC2016
TTY_SIZE='tty; for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size 2>/dev/null); [ -n "$s" ] && [ "$s" != "0 0" ] && break; sleep 0.5; done; echo "$s"'

# assert_no_leftovers: leftovers prints nothing
assert_no_leftovers() {
  local out
  out=$(leftovers)
  if [ -n "$out" ]; then
    printf 'left behind:\n%s\n' "$out"
    return 1
  fi
}

# wait_until SECONDS CMD...: retries CMD every 0.2 s until it succeeds; fails after SECONDS
wait_until() {
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 5; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  echo "# timed out after ${secs}s: $*"
  return 1
}

# docker_logs_have CID TEXT: docker logs of CID (stdout and stderr) contain TEXT
docker_logs_have() { "$DOCKER" logs "$1" 2>&1 | grep -qF -- "$2"; }

# docker_state CID: the container's .State.Status (running, paused, exited...)
docker_state() { "$DOCKER" inspect -f '{{.State.Status}}' "$1"; }

# docker_rm_all: removes every container of this dockerd (for teardown)
docker_rm_all() {
  local ids
  ids=$("$DOCKER" ps -aq 2>/dev/null) || return 0
  # shellcheck disable=SC2086
  [ -z "$ids" ] || timeout 120 "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
}

# ctr_rm_all: kills and deletes every task and container of namespace $CTR_NS (for teardown)
ctr_rm_all() {
  local t
  for t in $(timeout 30 $CTR -n "$CTR_NS" tasks ls -q 2>/dev/null); do
    timeout 30 $CTR -n "$CTR_NS" tasks kill --all -s SIGKILL "$t" >/dev/null 2>&1 || true
    timeout 60 $CTR -n "$CTR_NS" tasks delete --force "$t" >/dev/null 2>&1 || true
  done
  for t in $(timeout 30 $CTR -n "$CTR_NS" containers ls -q 2>/dev/null); do
    timeout 60 $CTR -n "$CTR_NS" containers delete "$t" >/dev/null 2>&1 || true
  done
}

# ctr_task_status ID: the task's status in $CTR_NS (RUNNING, PAUSED, STOPPED...), empty without one
ctr_task_status() { timeout 30 $CTR -n "$CTR_NS" tasks ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }

ctr_task_status_is() { [ "$(ctr_task_status "$1")" = "$2" ]; }
