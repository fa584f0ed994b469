"""The benchmark suite's pure parts: configuration keys, the trace log, the goals' verdicts, the
tables and plots rebuilt from a result (``suite.py --render``), the density run's stop rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import common, density, latency, suite
from benchmarks import run as start

CONFIG = """[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"

[factory]
# templates
enable_template = false
template_path = "/run/vc/vm/template"

[netmon]
enable_netmon = false
"""


def test_factory_keys_replace_only_the_factory_section() -> None:
    out = common.with_factory_keys(CONFIG, enable_template=True, template_path="/dev/shm/t", vm_cache_number=2)
    factory = out.split("[factory]")[1].split("[netmon]")[0]
    assert "enable_template = true" in factory and "enable_template = false" not in out
    assert 'template_path = "/dev/shm/t"' in factory and "/run/vc/vm/template" not in out
    assert "vm_cache_number = 2" in factory
    assert "enable_netmon = false" in out.split("[netmon]")[1]
    added = common.with_factory_keys("[hypervisor.qemu]\npath = \"q\"\n", enable_template=True)
    assert added.rstrip().endswith("[factory]\nenable_template = true")


def test_trace_log_calls_and_time_inside_them(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    log.write_text("10.0 12.5 0 --root /r --log /l create --bundle b c1\n"
                   "12.0 13.0 1 --kata-config /k start c1\n"
                   "garbage line\n")
    calls = common.parse_calls(log)
    assert [(c["sub"], c["wall"], c["rc"]) for c in calls] == [("create", 2.5, 0), ("start", 1.0, 1)]
    assert common.union_within([(c["t0"], c["t1"]) for c in calls], 11.0, 20.0) == pytest.approx(2.0)


def test_meminfo_in_bytes() -> None:
    info = common.meminfo("MemTotal:  1000 kB\nMemAvailable:  250 kB\nHugePages_Total:  3\n")
    assert info == {"MemTotal": 1024000, "MemAvailable": 256000, "HugePages_Total": 3}


def test_qemu_guest_mib_from_argv() -> None:
    assert start.qemu_guest_mib(["qemu", "-m", "512M", "-smp", "1"]) == 512
    assert start.qemu_guest_mib(["qemu", "-m", "2G"]) == 2048
    assert start.qemu_guest_mib(["qemu"]) == 0


def test_suite_short_defaults_and_bad_sections() -> None:
    a = suite.parse_args(["--short"])
    assert (a.repeat, a.checkpoints, a.modes) == (1, (1, 3), ["kata_tpl", "runc"])
    full = suite.parse_args(["--skip", "engines,pods"])
    assert full.checkpoints == (1, 5, 10, 25, 50)
    assert full.sections == ["start", "latency", "density", "network", "soak"]
    with pytest.raises(SystemExit):
        suite.parse_args(["--only", "startup"])
    with pytest.raises(SystemExit):
        suite.parse_args(["--density-modes", "kata_cache"])


def _point(n: int, pss_mb: float, avail_gib: float) -> dict[str, Any]:
    per = int(pss_mb * common.MB)
    return {"n": n, "elapsed": 3.0 * n, "pss_total": per * n, "pss_per_sandbox": per,
            "pss_by_role": {"qemu": (per - 8 * common.MB) * n, "kata-proxy": 4 * common.MB * n,
                            "kata-shim": 4 * common.MB * n},
            "pss_each": {"min": per, "max": per}, "mem_available": int(avail_gib * common.GIB),
            "host_used_per_sandbox": per, "cpu_percent_of_a_core": 1.5, "load": [1.0, 1.0, 1.0],
            "template_bytes": 600 * common.MB, "missing_processes": []}


def _result() -> dict[str, Any]:
    """A small suite result of the shape ``suite.py --json`` writes."""
    def ok(wall: float) -> dict[str, Any]:
        return {"ok": True, "wall": wall, "durations": {}, "phases": {}}

    host = {"cpu": "test", "cores": 2, "mem_total_gib": 23.5, "vcpus": 1, "guest_mem_mib": 512}
    st = {"repeat": 2, "short": False, "load_start": [1, 1, 1], "load_end": [1, 1, 1], "finished": "2026-12-02T00:00",
          "host": host, "bare": [{"ok": True, "to_marker": 4.9, "to_exit": 5.0}] * 2,
          "kata": [ok(12.0), ok(14.0)], "kata_tpl": [ok(3.0)] * 2, "kata_cache": [ok(2.0)] * 2,
          "runc": [ok(0.07)] * 2, "left_behind": [],
          "memory": {"ok": True, "cli_create": {"vmhwm": 30 * common.MB, "wait4_maxrss": 31 * common.MB},
                     "processes": {"qemu": [{"pss": 200 * common.MB, "rss": 1, "uss": 1}],
                                   "kata-proxy": [{"pss": 4 * common.MB, "rss": 1, "uss": 1}],
                                   "kata-shim": [{"pss": 5 * common.MB, "rss": 1, "uss": 1}]},
                     "guest": {"used": 60 * common.MB, "MemTotal": 480 * common.MB,
                               "ram_on_host": {"size": 512 << 20, "rss": 120 * common.MB, "pss": 120 * common.MB}}}}
    lat_modes = ["kata_tpl", "runc"]
    lat: dict[str, Any] = {"modes": lat_modes, "repeat": 1, "execs_per_container": 2, "mib": 16,
                           "start": {m: [{"ok": True, "create": 2.0, "start": 0.5, "wall": 2.5}] for m in lat_modes},
                           "exec": {"kata_tpl": [{"ok": True, "wall": 0.8}] * 2,
                                    "runc": [{"ok": True, "wall": 0.05}] * 2},
                           "stdio": {m: {d: [{"ok": True, "mbs": 30.0 if m == "kata_tpl" else 900.0}]
                                         for d in ("in", "out", "echo")} for m in lat_modes},
                           "stop": {m: [{"ok": True, "delete": 0.3}] for m in lat_modes},
                           "run_writing": {m: [{"ok": True, "mbs": 40.0}] for m in lat_modes}}
    dens = {"kata_tpl": {"mode": "kata_tpl", "checkpoints_asked": [1, 5], "mem_available_before": 20 * common.GIB,
                         "starts": [{"n": n, "ok": True, "wall": 3.0 + n / 10} for n in range(1, 5)]
                         + [{"n": 5, "ok": False, "error": "create: exit status 1: out of memory"}],
                         "points": [_point(1, 110, 19.9), _point(4, 90, 19.6) | {"final": True}],
                         "stopped_early": "sandbox 5 did not start: create: exit status 1: out of memory",
                         "teardown": {"n": 4, "seconds": 4.0, "failed": [], "left_behind": []}, "reached": 4},
            "runc": {"mode": "runc", "checkpoints_asked": [1, 5], "mem_available_before": 20 * common.GIB,
                     "starts": [{"n": n, "ok": True, "wall": 0.1} for n in range(1, 6)],
                     "points": [_point(1, 0.4, 19.9), _point(5, 0.4, 19.9)], "stopped_early": None,
                     "teardown": {"n": 5, "seconds": 1.0, "failed": [], "left_behind": []}, "reached": 5}}
    return {"suite": 1, "short": False, "sections": ["start", "latency", "density"], "host": host,
            "load_start": [1.0, 1.1, 1.2], "load_end": [2.0, 1.5, 1.3], "loads": {}, "finished": "2026-12-02T00:10",
            "seconds": 600, "start": st, "latency": lat, "density": dens, "left_behind": []}


def test_goals_say_how_far_each_is() -> None:
    res = _result()
    res["start"]["summary"] = start.summarize(res["start"])
    res["latency"]["summary"] = latency.summarize(res["latency"])
    rows = {g: (v, verdict) for g, v, _b, verdict in suite.goals(res)}
    cold = rows["cold `run` of `true` ≤ 1.3x the bare boot-and-exit"]
    assert cold == ("13.00 s = 2.60x", "short by 1.30x")
    assert rows["VM-cache start ≤ 0.2x our cold start"][1] == "met"  # 2.0 / 13.0 = 0.15
    assert rows["template start ≤ 0.15x our cold start"][1] == "short by 0.08x"  # 3.0 / 13.0 = 0.23
    assert rows["CLI peak RSS during `create` ≤ the peer's 27.6 MB"][1] == "short by 2.40 MB"
    assert rows["kata-shim PSS ≤ 6 MB"][1] == "met"
    assert rows["`exec` ≤ runc's + 0.3 s (kata, VM from the template)"][1] == "short by 0.45 s"
    assert rows["stdio ≥ 50 MB/s, host → process (kata, VM from the template, `exec`)"][1] == "short by 20.0 MB/s"
    reached = rows["50 idle sandboxes without running out of memory (kata, VMs from the template)"]
    assert reached[0] == "4 started" and "out of memory" in reached[1]
    pss = rows["template: host PSS ≤ 64 MB per sandbox at N = 50"]
    assert pss[0] == "90.0 MB at N=4" and pss[1].startswith("short by 26.00 MB") and "not 50" in pss[1]


def test_render_rebuilds_tables_and_plots_from_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    js = tmp_path / "suite.json"
    js.write_text(json.dumps(_result()))
    md = tmp_path / "suite.md"
    assert suite.main(["--render", str(js), "--plots", str(tmp_path / "plots"), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "| goal (issue 11) | this run | beside it | verdict |" in text
    assert "| kata, VMs from the template | 4 (where it stopped) |" in text
    assert "stopped early at N=4: sandbox 5 did not start" in text
    assert "`exec` of `true`" in text and "0.80 s (0.80 s … 0.80 s)" in text
    for png in ("start_times.png", "density_memory.png", "density_start.png", "latency.png"):
        data = (tmp_path / "plots" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, png
    assert "Plots: " in capsys.readouterr().out


def test_density_failures_count_but_running_short_of_memory_does_not() -> None:
    res = _result()
    res["start"]["summary"] = start.summarize(res["start"])
    res["latency"]["summary"] = latency.summarize(res["latency"])
    assert suite.failures(res) == ["density kata_tpl: start 5: create: exit status 1: out of memory"]
    res["density"]["kata_tpl"]["starts"].pop()
    res["density"]["kata_tpl"]["stopped_early"] = "before sandbox 5: host MemAvailable 1.90 GiB < 2 GiB"
    assert suite.failures(res) == []
    assert "MemAvailable 1.90 GiB" in density.render(res["density"])
