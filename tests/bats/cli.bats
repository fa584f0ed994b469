#!/usr/bin/env bats
# The CLI as a shell user meets it, beside runc. (Engines end to end come with the docker and
# containerd issues; these run without a VM.)

setup() {
  KATA=${KATA:-kata-runtime}
  ROOT=$(mktemp -d)
  WORK=$(mktemp -d)
}

teardown() {
  rm -rf "$ROOT" "$WORK"
}

@test "version names the runtime and the OCI spec, as runc does" {
  run "$KATA" --version
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == "kata-runtime version "* ]]
  [[ "$output" == *"spec: 1."* ]]
}

@test "spec writes the same default config.json as runc spec" {
  mkdir "$WORK/k" "$WORK/r"
  (cd "$WORK/k" && "$KATA" spec)
  (cd "$WORK/r" && runc spec)
  cmp "$WORK/k/config.json" "$WORK/r/config.json"
}

@test "an empty root lists nothing, in runc's table and JSON" {
  run "$KATA" --root "$ROOT" list
  [ "$status" -eq 0 ]
  [ "$output" = "$(runc --root "$ROOT" list)" ]
  run "$KATA" --root "$ROOT" list --format json
  [ "$output" = "null" ]
}

@test "an unknown container is one clear line, non-zero, and a JSON log line" {
  run "$KATA" --root "$ROOT" --log "$WORK/log" --log-format json state nosuch
  [ "$status" -ne 0 ]
  [ "${#lines[@]}" -eq 1 ]
  [[ "$output" == *nosuch*"does not exist"* ]]
  grep -q '"level":"error"' "$WORK/log"
}

@test "-h and --help work on every command, as runc's" {
  for cmd in create delete events exec kill list pause ps resume run spec start state update \
             factory kata-check kata-env kata-network version help; do
    for flag in -h --help; do
      run "$KATA" "$cmd" "$flag"
      [ "$status" -eq 0 ]
      [[ "${lines[0]}" == "Usage: kata-runtime $cmd "* ]]
    done
  done
}

@test "--version has runc's shape: version, commit, spec" {
  run "$KATA" --version
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" =~ ^kata-runtime\ version\ [^\ ]+$ ]]
  [[ "${lines[1]}" == "commit: "* ]]
  [ "${lines[2]}" = "$(runc --version | sed -n 3p)" ]
}

@test "a pid file in a missing directory is refused as runc refuses it, before anything starts" {
  mkdir -p "$WORK/b/rootfs/bin" && cp /bin/busybox "$WORK/b/rootfs/bin/" && ln -s busybox "$WORK/b/rootfs/bin/sh"
  (cd "$WORK/b" && "$KATA" spec) && sed -i 's/"terminal": true/"terminal": false/' "$WORK/b/config.json"
  run runc --root "$ROOT/runc" create --bundle "$WORK/b" --pid-file "$WORK/nodir/p" bats-pid
  [ "$status" -eq 1 ]
  [[ "$output" == *"nodir/.p: no such file or directory"* ]]
  run runc --root "$ROOT/runc" state bats-pid
  [[ "$output" == *"does not exist"* ]]
  run "$KATA" --root "$ROOT" create --bundle "$WORK/b" --pid-file "$WORK/nodir/p" bats-pid
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  [[ "$output" == *bats-pid*"--pid-file $WORK/nodir/p"*"no such file or directory"* ]]
  run "$KATA" --root "$ROOT" state bats-pid
  [[ "$output" == *"does not exist"* ]]
  [ ! -e "$WORK/nodir" ]
}
