#!/usr/bin/env bats
# containerd's v1 runtime path (containerd-shim + kata-runtime) through ctr, on a private
# containerd (engines.bash), with 64-hex-character ids as the engines make them. Every test that
# removes its task and container checks that nothing of them is left.
#
#   bats tests/bats/containerd.bats    (as root; one bats file at a time: each task is a VM)

load engines

: "${BATS_TEST_TIMEOUT:=300}"  # seconds per test: a hung engine call fails its test, not the run

V1=io.containerd.runtime.v1.linux

setup_file() {
  engines_start containerd
  make_busybox_image
}

teardown_file() {
  engines_stop
}

setup() {
  leftovers_mark
}

teardown() {
  ctr_rm_all
}

c() { $CTR -n "$CTR_NS" "$@"; }

# kata_run_d ID ARGS...: a detached kata task (no stdio) running ARGS; returns when it runs
kata_run_d() {
  local id=$1
  shift
  c run -d --null-io --runtime "$V1" "$CTR_IMAGE" "$id" "$@" </dev/null
  wait_until 30 ctr_task_status_is "$id" RUNNING
}

# task_deleted_with ID CODE: task delete succeeds and reports the workload's exit code (ctr 1.6
# exits 0 and warns "task ID exit with non-zero exit code N")
task_deleted_with() {
  run_show c task delete "$1"
  [ "$status" -eq 0 ]
  if [ "$2" -eq 0 ]; then
    [[ $output != *"non-zero exit code"* ]]
  else
    [[ $output == *"exit with non-zero exit code $2"* ]]
  fi
}

# the terminal's output without carriage returns and the ^@ that the pty echoes of ctr's NUL
pty_text() { local t=${1//$'\r'/}; printf '%s\n' "${t//'^@'/}"; }

# gone ID: delete the stopped task and the container, then nothing of them may be left
gone() {
  run_show c containers delete "$1"
  [ "$status" -eq 0 ]
  [ -z "$(c containers ls -q | grep -xF -- "$1")" ]
  assert_no_leftovers
}

@test "harness: a runc task (runc v2 shim) runs on the private containerd and leaves nothing" {
  run_show c run --rm --runtime io.containerd.runc.v2 "$CTR_IMAGE" "$(newid)" uname -r </dev/null
  [ "$status" -eq 0 ]
  [ "$output" = "$(uname -r)" ]
  assert_no_leftovers
}

@test "ctr run --rm prints the guest's kernel, not the host's" {
  run_show c run --rm --runtime "$V1" "$CTR_IMAGE" "$(newid)" uname -r </dev/null
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 1 ]
  [ -n "$output" ]
  [ "$output" != "$(uname -r)" ]
  assert_no_leftovers
}

@test "ctr run exits with the workload's exit code" {
  run_show c run --rm --runtime "$V1" "$CTR_IMAGE" "$(newid)" sh -c 'echo bye; exit 3' </dev/null
  [ "$status" -eq 3 ]
  [ "$output" = bye ]
  assert_no_leftovers
}

@test "ctr run -t: the task has a terminal of the client's size" {
  run_show in_pty "$CTR -n $CTR_NS run -t --rm --runtime $V1 $CTR_IMAGE $(newid) sh -c '$TTY_SIZE'"
  [ "$status" -eq 0 ]
  local out
  out=$(pty_text "$output")
  [[ $(sed -n 1p <<<"$out") =~ ^/dev/pts/[0-9]+$ ]]
  [ "$(sed -n 2p <<<"$out")" = "40 100" ]
  assert_no_leftovers
}

@test "ctr run -d, then task exec: output and exit code" {
  local id
  id=$(newid)
  kata_run_d "$id" sleep 600
  run_show c task exec --exec-id e1 "$id" sh -c 'echo in-exec; echo exec-err >&2; exit 4' </dev/null
  [ "$status" -eq 4 ]
  [[ $output == *in-exec* && $output == *exec-err* ]]
  run_show c task exec --exec-id e2 "$id" hostname </dev/null
  [ "$status" -eq 0 ]
  run_show c task kill -s SIGKILL "$id"
  [ "$status" -eq 0 ]
  wait_until 30 ctr_task_status_is "$id" STOPPED
  task_deleted_with "$id" 137
  gone "$id"
}

@test "task exec -t: the process has a terminal of the client's size" {
  local id
  id=$(newid)
  kata_run_d "$id" sleep 600
  run_show in_pty "$CTR -n $CTR_NS task exec -t --exec-id e1 $id sh -c '$TTY_SIZE'"
  [ "$status" -eq 0 ]
  local out
  out=$(pty_text "$output")
  [[ $(sed -n 1p <<<"$out") =~ ^/dev/pts/[0-9]+$ ]]
  [ "$(sed -n 2p <<<"$out")" = "40 100" ]
  c task kill -s SIGKILL "$id"
  wait_until 30 ctr_task_status_is "$id" STOPPED
  c task delete "$id" || true
  gone "$id"
}

@test "task kill: SIGTERM reaches the workload; task delete reports its exit code" {
  local id
  id=$(newid)
  kata_run_d "$id" sh -c 'trap "exit 7" TERM; while true; do sleep 1; done'
  run_show c task kill "$id"
  [ "$status" -eq 0 ]
  wait_until 30 ctr_task_status_is "$id" STOPPED
  task_deleted_with "$id" 7
  gone "$id"
}

@test "task kill -s SIGKILL ends a workload that ignores SIGTERM" {
  local id
  id=$(newid)
  kata_run_d "$id" sh -c 'trap "" TERM; while true; do sleep 1; done'
  c task kill "$id"
  sleep 2
  [ "$(ctr_task_status "$id")" = RUNNING ]
  run_show c task kill -s SIGKILL "$id"
  [ "$status" -eq 0 ]
  wait_until 30 ctr_task_status_is "$id" STOPPED
  task_deleted_with "$id" 137
  gone "$id"
}

@test "task pause and resume: PAUSED, then RUNNING, and exec works again" {
  local id
  id=$(newid)
  kata_run_d "$id" sleep 600
  run_show c task pause "$id"
  [ "$status" -eq 0 ]
  [ "$(ctr_task_status "$id")" = PAUSED ]
  run_show c task resume "$id"
  [ "$status" -eq 0 ]
  [ "$(ctr_task_status "$id")" = RUNNING ]
  run_show c task exec --exec-id e1 "$id" echo resumed </dev/null
  [ "$status" -eq 0 ]
  [ "$output" = resumed ]
  c task kill -s SIGKILL "$id"
  wait_until 30 ctr_task_status_is "$id" STOPPED
  c task delete "$id" || true
  gone "$id"
}

@test "task ps lists the task's pid" {
  local id pid
  id=$(newid)
  kata_run_d "$id" sleep 600
  pid=$(c task ls | awk -v id="$id" '$1 == id { print $2 }')
  [ -n "$pid" ]
  run_show c task ps "$id"
  [ "$status" -eq 0 ]
  [[ ${lines[0]} == PID* ]]
  [[ $(awk 'NR > 1 { print $1 }' <<<"$output") == *"$pid"* ]]
  c task kill -s SIGKILL "$id"
  wait_until 30 ctr_task_status_is "$id" STOPPED
  c task delete "$id" || true
  gone "$id"
}

@test "task metrics answers for a running task" {
  local id
  id=$(newid)
  kata_run_d "$id" sleep 600
  run_show c task metrics "$id"
  [ "$status" -eq 0 ]
  [ -n "$output" ]
  c task kill -s SIGKILL "$id"
  wait_until 30 ctr_task_status_is "$id" STOPPED
  c task delete "$id" || true
  gone "$id"
}

@test "containerd restarted while a task runs: still RUNNING, exec works, kill and delete clean up" {
  local id
  id=$(newid)
  kata_run_d "$id" sleep 600
  engines_restart_containerd
  [ "$(ctr_task_status "$id")" = RUNNING ]
  run_show c task exec --exec-id e1 "$id" echo alive </dev/null
  [ "$status" -eq 0 ]
  [ "$output" = alive ]
  run_show c task kill -s SIGKILL "$id"
  [ "$status" -eq 0 ]
  wait_until 30 ctr_task_status_is "$id" STOPPED
  task_deleted_with "$id" 137
  gone "$id"
}

@test "nothing is left of any container of this file" {
  LEFTOVERS_SCOPE=all assert_no_leftovers
}
