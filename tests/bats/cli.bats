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
