#!/usr/bin/env bats
# docker --runtime=kata as a user meets it: a private dockerd on a private containerd (engines.bash),
# a busybox image made locally, VM templates on. One behaviour per test; every test that removes
# its containers checks that nothing of them is left (no QEMU, proxy, shim, mount or state).
# Where the output must be runc's, runc runs the same command (no VM: fast).
#
#   bats tests/bats/docker.bats        (as root; one bats file at a time: each container is a VM)

load engines

: "${BATS_TEST_TIMEOUT:=300}"  # seconds per test: a hung engine call fails its test, not the run

setup_file() {
  engines_start
  make_busybox_image
}

teardown_file() {
  engines_stop
}

setup() {
  leftovers_mark
}

teardown() {
  docker_rm_all
}

kata() { "$DOCKER" run --runtime=kata "$@"; }

# a detached kata container running ARGS (no network); prints its id
kata_d() { "$DOCKER" run -d --runtime=kata --net=none "$KATA_IMAGE" "$@"; }

docker_state_is() { [ "$(docker_state "$1")" = "$2" ]; }

# the host's HTTP client (busybox's static wget crashes on this host's kernel)
http_get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }

boots_are() { [ "$("$DOCKER" logs "$1" 2>&1 | grep -c boot)" -eq "$2" ]; }

@test "harness: a runc container runs on the private engines and leaves nothing" {
  run_show "$DOCKER" run --rm --runtime=runc --net=none "$KATA_IMAGE" uname -r
  [ "$status" -eq 0 ]
  [ "$output" = "$(uname -r)" ]
  assert_no_leftovers
}

@test "run --rm prints the guest's kernel, not the host's" {
  run_show kata --rm --net=none "$KATA_IMAGE" uname -r
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 1 ]
  [ -n "$output" ]
  [ "$output" != "$(uname -r)" ]
  assert_no_leftovers
}

@test "run --rm exits with the workload's exit code" {
  run_show kata --rm --net=none "$KATA_IMAGE" sh -c 'exit 3'
  [ "$status" -eq 3 ]
  assert_no_leftovers
}

@test "-e, -w, -u and --hostname reach the workload, as with runc" {
  local args=(-e FOO=bar -w /tmp -u 1000:1000 --hostname kh "$KATA_IMAGE"
    sh -c 'echo "FOO=$FOO"; pwd; id -u; id -g; hostname')
  run_show kata --rm --net=none "${args[@]}"
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'FOO=bar\n/tmp\n1000\n1000\nkh')" ]
  local kata_out=$output
  run_show "$DOCKER" run --rm --runtime=runc --net=none "${args[@]}"
  [ "$output" = "$kata_out" ]
  assert_no_leftovers
}

@test "/etc/hostname, /etc/hosts and /etc/resolv.conf are docker's files" {
  run_show kata --name etc-files --net=none "$KATA_IMAGE" \
    sh -c 'cat /etc/hostname; echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf'
  [ "$status" -eq 0 ]
  local id hn hosts resolv expected
  id=$("$DOCKER" inspect -f '{{.Id}}' etc-files)
  hn=$("$DOCKER" inspect -f '{{.HostnamePath}}' etc-files)
  hosts=$("$DOCKER" inspect -f '{{.HostsPath}}' etc-files)
  resolv=$("$DOCKER" inspect -f '{{.ResolvConfPath}}' etc-files)
  expected=$(cat "$hn"; echo ---; cat "$hosts"; echo ---; cat "$resolv")
  [ "$output" = "$expected" ]
  [ "${lines[0]}" = "${id:0:12}" ]
  "$DOCKER" rm etc-files
  assert_no_leftovers
}

@test "-v DIR:/data: the host reads what the container writes, and the other way round" {
  local dir
  dir=$(mktemp -d "$ENGINE_DIR/vol.XXXXXX")
  echo from-host >"$dir/y"
  run_show kata --rm --net=none -v "$dir:/data" "$KATA_IMAGE" sh -c 'cat /data/y && echo from-container >/data/x'
  [ "$status" -eq 0 ]
  [ "$output" = from-host ]
  [ "$(cat "$dir/x")" = from-container ]
  assert_no_leftovers
}

@test "-v DIR:/data:ro refuses writes" {
  local dir
  dir=$(mktemp -d "$ENGINE_DIR/vol.XXXXXX")
  echo ro-file >"$dir/r"
  run_show kata --rm --net=none -v "$dir:/data:ro" "$KATA_IMAGE" sh -c 'cat /data/r; echo no >/data/n'
  [ "$status" -ne 0 ]
  [ "${lines[0]}" = ro-file ]
  [[ $output == *"Read-only file system"* ]]
  [ ! -e "$dir/n" ]
  assert_no_leftovers
}

@test "--mount type=bind,src=DIR,dst=/m works both ways" {
  local dir
  dir=$(mktemp -d "$ENGINE_DIR/vol.XXXXXX")
  echo mount-file >"$dir/z"
  run_show kata --rm --net=none --mount "type=bind,src=$dir,dst=/m" "$KATA_IMAGE" sh -c 'cat /m/z && echo written >/m/w'
  [ "$status" -eq 0 ]
  [ "$output" = mount-file ]
  [ "$(cat "$dir/w")" = written ]
  assert_no_leftovers
}

@test "a named volume keeps its data from one container to the next" {
  "$DOCKER" volume create v1
  run_show kata --rm --net=none -v v1:/v "$KATA_IMAGE" sh -c 'echo kept >/v/k'
  [ "$status" -eq 0 ]
  run_show kata --rm --net=none -v v1:/v "$KATA_IMAGE" cat /v/k
  [ "$status" -eq 0 ]
  [ "$output" = kept ]
  "$DOCKER" volume rm v1
  assert_no_leftovers
}

@test "-i: the container reads the client's stdin to its end" {
  run_show bash -c "echo hello | '$DOCKER' run -i --rm --runtime=kata --net=none '$KATA_IMAGE' cat"
  [ "$status" -eq 0 ]
  [ "$output" = hello ]
  assert_no_leftovers
}

@test "-t: the container has a terminal of the client's size" {
  run_show in_pty "'$DOCKER' run -t --rm --runtime=kata --net=none '$KATA_IMAGE' sh -c '$TTY_SIZE'"
  [ "$status" -eq 0 ]
  local out=${output//$'\r'/}
  [[ $(sed -n 1p <<<"$out") =~ ^/dev/pts/[0-9]+$ ]]
  [ "$(sed -n 2p <<<"$out")" = "40 100" ]
  assert_no_leftovers
}

@test "-d: docker logs shows stdout and stderr, kept apart" {
  local cid
  cid=$(kata_d sh -c 'echo out-line; echo err-line >&2; exec sleep 600')
  wait_until 30 docker_logs_have "$cid" err-line
  run_show "$DOCKER" logs "$cid"
  [[ $output == *out-line* && $output == *err-line* ]]
  [ "$("$DOCKER" logs "$cid" 2>/dev/null)" = out-line ]
  [ "$("$DOCKER" logs "$cid" 2>&1 >/dev/null)" = err-line ]
  [ "$(docker_state "$cid")" = running ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker exec: output, exit code, -e, -w and stdin" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" exec "$cid" sh -c 'echo in-exec; echo exec-err >&2; exit 5'
  [ "$status" -eq 5 ]
  [[ $output == *in-exec* && $output == *exec-err* ]]
  run_show "$DOCKER" exec -e X=1 -w /tmp "$cid" sh -c 'echo "X=$X"; pwd'
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'X=1\n/tmp')" ]
  run_show bash -c "echo piped | '$DOCKER' exec -i '$cid' cat"
  [ "$status" -eq 0 ]
  [ "$output" = piped ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker exec -t: the process has a terminal of the client's size" {
  local cid
  cid=$(kata_d sleep 600)
  run_show in_pty "'$DOCKER' exec -t '$cid' sh -c '$TTY_SIZE'"
  [ "$status" -eq 0 ]
  local out=${output//$'\r'/}
  [[ $(sed -n 1p <<<"$out") =~ ^/dev/pts/[0-9]+$ ]]
  [ "$(sed -n 2p <<<"$out")" = "40 100" ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker stop: SIGTERM reaches the workload, which exits with its own code" {
  local cid
  cid=$(kata_d sh -c 'trap "echo got-TERM; exit 42" TERM; echo ready; while true; do sleep 1; done')
  wait_until 30 docker_logs_have "$cid" ready
  run_show "$DOCKER" stop -t 30 "$cid"
  [ "$status" -eq 0 ]
  [ "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$cid")" = 42 ]
  docker_logs_have "$cid" got-TERM
  "$DOCKER" rm "$cid"
  assert_no_leftovers
}

@test "docker stop -t 2: a workload that ignores SIGTERM is killed" {
  local cid t0 t1
  cid=$(kata_d sh -c 'trap "" TERM; echo ready; while true; do sleep 1; done')
  wait_until 30 docker_logs_have "$cid" ready
  t0=$(date +%s)
  run_show "$DOCKER" stop -t 2 "$cid"
  t1=$(date +%s)
  [ "$status" -eq 0 ]
  [ "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$cid")" = 137 ]
  [ $((t1 - t0)) -ge 2 ] && [ $((t1 - t0)) -lt 30 ]
  "$DOCKER" rm "$cid"
  assert_no_leftovers
}

@test "docker kill: -s USR1 reaches the workload, plain kill ends it with 137" {
  local cid
  cid=$(kata_d sh -c 'trap "echo got-USR1" USR1; echo ready; while true; do sleep 1; done')
  wait_until 30 docker_logs_have "$cid" ready
  run_show "$DOCKER" kill -s USR1 "$cid"
  [ "$status" -eq 0 ]
  wait_until 10 docker_logs_have "$cid" got-USR1
  [ "$(docker_state "$cid")" = running ]
  run_show "$DOCKER" kill "$cid"
  [ "$status" -eq 0 ]
  wait_until 30 docker_state_is "$cid" exited
  [ "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$cid")" = 137 ]
  "$DOCKER" rm "$cid"
  assert_no_leftovers
}

@test "docker rm -f removes a running container" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" rm -f "$cid"
  [ "$status" -eq 0 ]
  [ -z "$("$DOCKER" ps -aq --no-trunc --filter "id=$cid")" ]
  assert_no_leftovers
}

@test "docker restart: the workload starts again and exec works" {
  local cid
  cid=$(kata_d sh -c 'echo boot; trap "exit 0" TERM; while true; do sleep 1; done')
  wait_until 30 docker_logs_have "$cid" boot
  run_show "$DOCKER" restart -t 10 "$cid"
  [ "$status" -eq 0 ]
  [ "$(docker_state "$cid")" = running ]
  wait_until 30 boots_are "$cid" 2
  run_show "$DOCKER" exec "$cid" echo after-restart
  [ "$status" -eq 0 ]
  [ "$output" = after-restart ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker pause and unpause: paused in inspect, exec works again after unpause" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" pause "$cid"
  [ "$status" -eq 0 ]
  [ "$(docker_state "$cid")" = paused ]
  run_show "$DOCKER" unpause "$cid"
  [ "$status" -eq 0 ]
  [ "$(docker_state "$cid")" = running ]
  run_show "$DOCKER" exec "$cid" echo unpaused
  [ "$status" -eq 0 ]
  [ "$output" = unpaused ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker top lists the workload's command" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" top "$cid"
  [ "$status" -eq 0 ]
  [[ $output == *"sleep 600"* ]]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker stats --no-stream shows one line for the container" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" stats --no-stream "$cid"
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 2 ]
  [[ ${lines[1]} == "${cid:0:12} "* ]]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker update --memory 256m --memory-swap 512m --cpus 1 succeeds and docker records it" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" update --memory 256m --memory-swap 512m --cpus 1 "$cid"
  [ "$status" -eq 0 ]
  [ "$("$DOCKER" inspect -f '{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}' "$cid")" = "268435456 1000000000" ]
  [ "$(docker_state "$cid")" = running ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker update --memory 256m --memory-swap 512m --cpus 1: the guest's cgroup of the container has the limits" {
  local cid
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" update --memory 256m --memory-swap 512m --cpus 1 "$cid"
  [ "$status" -eq 0 ]
  # cgroup v2 in the guest; with a host cgroup namespace the container's group is a subdirectory
  run_show "$DOCKER" exec "$cid" sh -c \
    'g=$(sed -n "s/^0:://p" /proc/self/cgroup); cat "/sys/fs/cgroup$g/memory.max" "/sys/fs/cgroup$g/cpu.max"'
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf '268435456\n100000 100000')" ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "docker cp into and out of a running container" {
  local cid dir
  dir=$(mktemp -d "$ENGINE_DIR/cp.XXXXXX")
  echo copied-in >"$dir/in"
  cid=$(kata_d sleep 600)
  run_show "$DOCKER" cp "$dir/in" "$cid:/tmp/in"
  [ "$status" -eq 0 ]
  run_show "$DOCKER" exec "$cid" cat /tmp/in
  [ "$status" -eq 0 ]
  [ "$output" = copied-in ]
  "$DOCKER" exec "$cid" sh -c 'echo copied-out >/tmp/out'
  run_show "$DOCKER" cp "$cid:/tmp/out" "$dir/out"
  [ "$status" -eq 0 ]
  [ "$(cat "$dir/out")" = copied-out ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "--net=host is refused, with an error about the host network" {
  run_show kata --rm --net=host "$KATA_IMAGE" true
  [ "$status" -ne 0 ]
  local re="host('s)?[ -]?network"
  [[ ${output,,} =~ $re ]]
  assert_no_leftovers
}

@test "the default bridge network: eth0 has docker's address and reaches the gateway" {
  local cid ip
  cid=$("$DOCKER" run -d --runtime=kata "$KATA_IMAGE" sleep 600)
  ip=$("$DOCKER" inspect -f '{{.NetworkSettings.IPAddress}}' "$cid")
  [ -n "$ip" ]
  run_show "$DOCKER" exec "$cid" ip -4 -o addr show eth0
  [ "$status" -eq 0 ]
  [[ $output == *"inet $ip/24 "* ]]
  run_show "$DOCKER" exec "$cid" ping -c 1 -W 5 "$ENGINE_GATEWAY"
  [ "$status" -eq 0 ]
  "$DOCKER" rm -f "$cid"
  assert_no_leftovers
}

@test "--net=none: the guest has only lo" {
  run_show kata --rm --net=none "$KATA_IMAGE" ls /sys/class/net
  [ "$status" -eq 0 ]
  [ "$output" = "lo" ]
  assert_no_leftovers
}

@test "bridge: -p publishes a kata port on the host; kata reaches kata, runc reaches kata and back" {
  local web='mkdir -p /www && echo "served by $(hostname)" > /www/index.html && httpd -f -p 80 -h /www'
  local a b r ip_a ip_r port
  port=$((20000 + RANDOM % 20000))
  a=$("$DOCKER" run -d --runtime=kata --hostname kata-a -p "127.0.0.1:$port:80" "$KATA_IMAGE" sh -c "$web")
  b=$("$DOCKER" run -d --runtime=kata "$KATA_IMAGE" sleep 600)
  r=$("$DOCKER" run -d --runtime=runc --hostname runc-r "$KATA_IMAGE" sh -c "$web")
  ip_a=$("$DOCKER" inspect -f '{{.NetworkSettings.IPAddress}}' "$a")
  ip_r=$("$DOCKER" inspect -f '{{.NetworkSettings.IPAddress}}' "$r")
  # the host, through docker's published port
  wait_until 60 http_get "http://127.0.0.1:$port/" >/dev/null
  run_show http_get "http://127.0.0.1:$port/"
  [ "$output" = "served by kata-a" ]
  # kata -> kata, kata -> runc, runc -> kata, by address on docker's bridge
  run_show "$DOCKER" exec "$b" timeout 10 wget -q -O - "http://$ip_a/"
  [ "$output" = "served by kata-a" ]
  run_show "$DOCKER" exec "$b" timeout 10 wget -q -O - "http://$ip_r/"
  [ "$output" = "served by runc-r" ]
  run_show "$DOCKER" exec "$r" timeout 10 wget -q -O - "http://$ip_a/"
  [ "$output" = "served by kata-a" ]
  "$DOCKER" rm -f "$a" "$b" "$r"
  assert_no_leftovers
}

@test "a prestart hook (OCI hooks)" {
  skip "docker cannot add OCI hooks (its own libnetwork-setkey prestart hook runs in every test here); hooks are tested in tests/oci"
}

@test "dockerd restarted with live-restore: the container keeps running, exec, stop and rm work" {
  local cid
  cid=$(kata_d sh -c 'trap "exit 0" TERM; while true; do sleep 1; done')
  [ "$(docker_state "$cid")" = running ]
  engines_restart_dockerd
  [ "$(docker_state "$cid")" = running ]
  [[ $("$DOCKER" ps -q --no-trunc) == *"$cid"* ]]
  run_show "$DOCKER" exec "$cid" echo alive
  [ "$status" -eq 0 ]
  [ "$output" = alive ]
  run_show "$DOCKER" stop -t 10 "$cid"
  [ "$status" -eq 0 ]
  [ "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$cid")" = 0 ]
  run_show "$DOCKER" rm "$cid"
  [ "$status" -eq 0 ]
  assert_no_leftovers
}

@test "nothing is left of any container of this file" {
  LEFTOVERS_SCOPE=all assert_no_leftovers
}
