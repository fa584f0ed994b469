#!/usr/bin/env python3
"""docker run and docker exec with kata-runtime, beside runc and beside kata-runtime on its own.

    python benchmarks/engines.py [--short] [--repeat N] [--execs N] [--json FILE] [--markdown FILE]
                                 [--runtime PATH] [--template|--no-template]

Starts a private containerd and dockerd (everything in /tmp/kata-bench-engines.*: sockets,
data-root, exec-root, pid files, logs; kata-runtime as docker's runtimes "kata" and "kata-cold"),
imports a busybox image, then measures in one run, interleaved (round robin, so that load drifts
hit every mode alike), N times:

1. ``docker run --rm --runtime=kata --net=none kata-busybox true`` (wall time of the docker CLI);
2. the same with ``--runtime=kata-cold`` (no VM template; not with --short or --no-template);
3. ``docker run --rm --runtime=runc --net=none kata-busybox true``;
4. ``kata-runtime run`` of ``true`` in a busybox bundle, same kata configuration as 1 (and as 2);
5. ``runc run`` of the same bundle;

so that docker's overhead on top of kata-runtime is (1) - (4) of the medians. Then exec latency:
one ``sleep 1000`` container of each kind (docker + kata, docker + runc, kata-runtime, runc), and
M times, round robin, ``docker exec <id> true`` / ``kata-runtime exec <id> true`` / ``runc exec``.

Everything is removed at the end, also on failure, Ctrl-C or SIGTERM; exit 1 when a run failed or
something was left behind, never because of a number. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: the repository on sys.path for ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    INSTALLED_CONFIG,
    SHARED_ROOT,
    cmdline,
    default_runc,
    default_runtime,
    diff,
    environ_has,
    first_error,
    fmt_s,
    guarded,
    host_facts,
    loadavg,
    make_bundle,
    median,
    minimum,
    mounts_naming,
    mounts_under,
    needs_root,
    parse_calls,
    progress,
    quiet,
    read,
    remove_cgroup_parent,
    render_saved,
    report_cleanup,
    signals_held,
    union_within,
    unwind_on_signals,
    with_factory_keys,
    write_results,
    write_trace_wrapper,
)

DOCKER = "/usr/bin/docker"  # /usr/local/bin/docker is another (newer) client
IMAGE = "kata-busybox:latest"
MARK_ENV = "KATA_BENCH_ENGINES"  # set in the daemons' environment: everything they start inherits it
GOAL_DOCKER_OVERHEAD = 0.5  # seconds, docker run kata - kata-runtime run (medians)
KATA_PROGRAMS = ("qemu-system", "kata-proxy", "kata-shim")  # what ``ours(roles)`` looks for in argv[:3]

RUN_MODES = {  # key: (label, what runs it)
    "docker_kata": "`docker run --rm --runtime=kata --net=none kata-busybox true`",
    "docker_kata_cold": "`docker run --rm --runtime=kata-cold --net=none kata-busybox true` (cold boot)",
    "docker_runc": "`docker run --rm --runtime=runc --net=none kata-busybox true`",
    "kata_run": "`kata-runtime run` of `true` (busybox bundle)",
    "kata_run_cold": "`kata-runtime run` of `true`, cold boot",
    "runc_run": "`runc run` of `true` (same bundle)",
}
EXEC_MODES = {
    "docker_exec_kata": "`docker exec <id> true`, kata container",
    "kata_exec": "`kata-runtime exec <id> true`",
    "docker_exec_runc": "`docker exec <id> true`, runc container",
    "runc_exec": "`runc exec <id> true`",
}
say = progress("engines")


# --------------------------------------------------------------------------------------- the harness

class Harness:
    """The private engines and everything started through them, so that clean-up finds it all."""

    def __init__(self, work: Path, runtime: str, runc: str, timeout: float, progress: Callable[[str], None],
                 trace: bool = True):
        self.work = work
        self.real_runtime = runtime
        self.runtime = runtime
        self.calls_log = work / "runtime-calls.log"
        if trace:  # every kata-runtime call (the engines' and ours) through a wrapper that logs its times
            self.runtime = write_trace_wrapper(work / "kata-runtime", runtime, self.calls_log)
        self.runc = runc
        self.timeout = timeout
        self.say = progress
        self.tag = f"kbe{os.getpid()}"
        self.kata_root = work / "kr"
        self.runc_root = work / "rr"
        self.sock = work / "docker.sock"
        self.ctd_sock = work / "containerd.sock"
        self.tpl_conf = work / "kata.toml"
        self.cold_conf = work / "kata-cold.toml"
        self.template_dir = work / "template"
        self.cgroup_parent = f"kata-bench-engines-{os.getpid()}"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(work / "cli"))
        self.env.pop("KATA_CONF_FILE", None)
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.children: list[subprocess.Popen[bytes]] = []
        self.ids: list[str] = []  # every name and id we gave or got: docker names and hex ids, bundle ids
        self.kata_ids: list[str] = []  # direct kata-runtime containers
        self.runc_ids: list[str] = []
        self.factory_made = False
        self.storage_driver = ""
        self.template = True
        self.seq = 0

    # ------------------------------------------------------------------------------- processes
    def spawn(self, argv: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(out, "ab") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, cwd="/",
                                 env=env or self.env, start_new_session=True)
        self.children.append(p)
        return p

    def timed(self, argv: list[str], name: str, timeout: float | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a command to its end: {"wall", "rc", "out", "error"?}; its output kept in a file."""
        self.seq += 1
        out = self.work / "out" / f"{self.seq:03d}-{name}.out"
        res: dict[str, Any] = {"t_start": time.time()}
        t0 = time.monotonic()
        p = self.spawn(argv, out, env)
        try:
            rc = p.wait(timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            res["error"] = f"timeout after {timeout or self.timeout:g} s: {' '.join(argv[:6])}"
        res["wall"] = round(time.monotonic() - t0, 3)
        res["t_end"] = time.time()
        res["rc"] = rc
        res["out"] = read(out, 4000)
        self.children.remove(p)
        if rc != 0 and "error" not in res:
            res["error"] = f"exit status {rc}: {first_error(res['out'])}"
        return res

    def quiet(self, argv: list[str], timeout: float, env: dict[str, str] | None = None) -> int | None:
        return quiet(argv, timeout, env or self.env)

    def docker(self, *args: str) -> list[str]:
        return [DOCKER, *args]

    def kata(self, conf: Path, *args: str) -> list[str]:
        return [self.runtime, "--root", str(self.kata_root), "--kata-config", str(conf), *args]

    def ours(self, roles: tuple[str, ...] | None = None) -> list[tuple[psutil.Process, str]]:
        """Processes (but us) whose command line names our work dir or one of our ids, or that
        inherited our daemons' marker; with ``roles``: only those whose first arguments name one."""
        me = os.getpid()
        skip = {me} | {p.pid for p in psutil.Process(me).parents()}
        needles = [str(self.work)] + [i for i in self.ids if len(i) >= 8]
        found = []
        for p in psutil.process_iter():
            if p.pid in skip:
                continue
            argv = cmdline(p)
            if not argv:
                continue
            joined = " ".join(argv)
            if roles is not None and not any(r in a for a in argv[:3] for r in roles):
                continue
            if any(n in joined for n in needles) or environ_has(p, MARK_ENV, str(self.work)):
                found.append((p, joined[:500]))
        return found

    def kata_procs_of(self, ids: Iterable[str]) -> list[str]:
        ids = [i for i in ids if i]
        return [f"pid {p.pid}: {c}" for p, c in self.ours(KATA_PROGRAMS) if any(i in c for i in ids)]

    def wait_gone(self, ids: list[str], seconds: float = 10.0) -> list[str]:
        """The kata processes of ``ids`` still running after up to ``seconds`` (the VM goes async)."""
        deadline = time.monotonic() + seconds
        while True:
            left = self.kata_procs_of(ids)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    # ------------------------------------------------------------------------------- set-up
    def write_kata_configs(self) -> None:
        text = INSTALLED_CONFIG.read_text()
        for path, enable in ((self.tpl_conf, True), (self.cold_conf, False)):
            path.write_text(with_factory_keys(text, enable_template=enable, template_path=str(self.template_dir)))

    def factory_init(self) -> dict[str, Any]:
        env = dict(self.env, KATA_CONF_FILE=str(self.tpl_conf))
        self.factory_made = True  # from here on, clean-up destroys it
        r = self.timed([self.runtime, "factory", "init"], "factory-init", timeout=max(self.timeout, 180), env=env)
        st = subprocess.run([self.runtime, "factory", "status"], env=env, capture_output=True, text=True,
                            timeout=60)
        r["status"] = (st.stdout + st.stderr).strip()
        r["ok"] = r["rc"] == 0 and "VM template at" in r["status"]
        if r["rc"] == 0 and not r["ok"]:
            r["error"] = f"factory init exited 0 but status says: {r['status']}"
        return r

    def start_containerd(self) -> dict[str, Any]:
        c = self.work / "c"
        for d in ("root", "state", "opt", "v1"):
            (c / d).mkdir(parents=True, exist_ok=True)
        conf = self.work / "containerd.toml"
        conf.write_text(f"""version = 2
root = "{c}/root"
state = "{c}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{self.ctd_sock}"

[ttrpc]
  address = "{self.ctd_sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{c}/v1"
""")
        env = dict(self.env, **{MARK_ENV: str(self.work)})
        t0 = time.monotonic()
        p = self.spawn(["containerd", "--config", str(conf)], self.work / "containerd.log", env)
        self.daemons["containerd"] = p
        (self.work / "containerd.pid").write_text(str(p.pid))
        deadline = t0 + 60
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"containerd exited ({p.returncode}): "
                                   f"{first_error(read(self.work / 'containerd.log'))}")
            if self.ctd_sock.exists() and self.quiet(["ctr", "--address", str(self.ctd_sock), "version"], 10) == 0:
                return {"seconds": round(time.monotonic() - t0, 3), "pid": p.pid}
            time.sleep(0.1)
        raise RuntimeError(f"containerd does not answer after 60 s: {first_error(read(self.work / 'containerd.log'))}")

    def daemon_json(self, driver: str, template: bool) -> dict[str, Any]:
        kata_conf = self.tpl_conf if template else self.cold_conf
        runtimes = {"kata": {"path": self.runtime, "runtimeArgs": ["--kata-config", str(kata_conf)]}}
        if template:
            runtimes["kata-cold"] = {"path": self.runtime, "runtimeArgs": ["--kata-config", str(self.cold_conf)]}
        return {
            "data-root": str(self.work / "d"),
            "exec-root": str(self.work / "x"),
            "pidfile": str(self.work / "dockerd.pid"),
            "hosts": [f"unix://{self.sock}"],
            "containerd": str(self.ctd_sock),
            "storage-driver": driver,
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "cgroup-parent": f"/{self.cgroup_parent}",
            "bridge": "none",
            "iptables": False,
            "ip-forward": False,
            "ip-masq": False,
            "userland-proxy": False,
            "live-restore": False,
            "features": {"buildkit": False},
            "runtimes": runtimes,
        }

    def start_dockerd(self, template: bool) -> dict[str, Any]:
        tried: list[str] = []
        for driver in ("overlay2", "vfs"):
            conf = self.work / "daemon.json"
            conf.write_text(json.dumps(self.daemon_json(driver, template), indent=1))
            log = self.work / f"dockerd-{driver}.log"
            env = dict(self.env, **{MARK_ENV: str(self.work)})
            t0 = time.monotonic()
            p = self.spawn(["dockerd", "--config-file", str(conf)], log, env)
            self.daemons["dockerd"] = p
            deadline = t0 + 90
            ok = False
            while time.monotonic() < deadline:
                if p.poll() is not None:
                    break
                if self.sock.exists() and self.quiet(self.docker("version"), 10) == 0:
                    ok = True
                    break
                time.sleep(0.1)
            if ok:
                info = subprocess.run(self.docker("info", "--format", "{{.Driver}}"), env=self.env,
                                      capture_output=True, text=True, timeout=30).stdout.strip()
                self.storage_driver = info or driver
                return {"seconds": round(time.monotonic() - t0, 3), "pid": p.pid, "storage_driver": info,
                        "tried": tried}
            tried.append(f"{driver}: {first_error(read(log))}")
            self.say(f"dockerd with {driver} did not come up: {tried[-1]}")
            self.stop_daemon("dockerd", 20)
            shutil.rmtree(self.work / "d", ignore_errors=True)
        raise RuntimeError("dockerd does not start: " + "; ".join(tried))

    def make_image(self) -> dict[str, Any]:
        root = self.work / "image" / "rootfs"
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run"):
            (root / d).mkdir(parents=True)
        (root / "tmp").chmod(0o1777)
        busybox = "/bin/busybox"
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split():
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        tar = self.work / "image" / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", str(root), "-cf", str(tar), "."],
                       check=True)
        with open(tar, "rb") as f:
            t0 = time.monotonic()
            r = subprocess.run(self.docker("import", "--change", 'CMD ["sh"]', "-", IMAGE), stdin=f,
                               env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"docker import failed: {first_error(r.stderr + r.stdout)}")
        return {"seconds": round(time.monotonic() - t0, 3), "image": r.stdout.strip()}

    # ------------------------------------------------------------------------------- runs
    def name(self, short: str) -> str:
        n = f"{self.tag}-{short}"
        self.ids.append(n)
        return n

    def docker_run(self, runtime: str, short: str) -> dict[str, Any]:
        name = self.name(short)
        cidfile = self.work / "cid" / name
        argv = self.docker("run", "--rm", f"--runtime={runtime}", "--net=none", "--name", name,
                           "--cidfile", str(cidfile), IMAGE, "true")
        r = self.timed(argv, name)
        cid = read(cidfile).strip()
        if cid:
            self.ids.append(cid)
        r.update(name=name, id=cid)
        if r["rc"] != 0:
            self.quiet(self.docker("rm", "-f", name), 120)  # a failed start may leave it behind
        if runtime.startswith("kata") and cid:
            left = self.wait_gone([cid])
            if left:
                r["left_behind"] = left
                r.setdefault("error", f"left behind: {left}")
            r["shared_dir_left"] = (SHARED_ROOT / cid).exists()  # removed (and reported) by the clean-up
        r["ok"] = r["rc"] == 0 and "error" not in r
        return r

    def kata_run(self, conf: Path, short: str, bundle: Path) -> dict[str, Any]:
        cid = self.name(short)
        self.kata_ids.append(cid)
        r = self.timed(self.kata(conf, "run", "--bundle", str(bundle), cid), cid)
        r["id"] = cid
        r["shared_dir_left"] = (SHARED_ROOT / cid).exists()
        left = self.wait_gone([cid], 5.0)
        if left:
            r["left_behind"] = left
            r.setdefault("error", f"left behind: {left}")
        r["ok"] = r["rc"] == 0 and "error" not in r
        return r

    def runc_run(self, short: str, bundle: Path) -> dict[str, Any]:
        cid = self.name(short)
        self.runc_ids.append(cid)
        r = self.timed([self.runc, "--root", str(self.runc_root), "run", "--bundle", str(bundle), cid], cid)
        r["id"] = cid
        r["ok"] = r["rc"] == 0 and "error" not in r
        return r

    # ------------------------------------------------------------------------------- clean-up
    def stop_daemon(self, which: str, grace: float) -> str:
        """TERM, wait up to ``grace`` s, then KILL; returns how it went."""
        p = self.daemons.get(which)
        if p is None or p.poll() is not None:
            return "not running"
        p.terminate()
        try:
            p.wait(timeout=grace)
            return "stopped"
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
            return f"ignored SIGTERM for {grace:g} s: SIGKILL"
        finally:
            if p in self.children:
                self.children.remove(p)

    def cleanup(self) -> dict[str, Any]:
        """Remove everything whatever happened; what had to be removed by force is reported."""
        with signals_held():
            return self._cleanup()

    def _cleanup(self) -> dict[str, Any]:
        rep: dict[str, Any] = {"forced": [], "notes": []}
        for p in list(self.children):  # a CLI still running (interrupted or timed out)
            if p in self.daemons.values():
                continue
            if p.poll() is None:
                p.kill()
                rep["notes"].append(f"killed a running command (pid {p.pid})")
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        d = self.daemons.get("dockerd")
        if d is not None and d.poll() is None:
            try:
                ids = subprocess.run(self.docker("ps", "-aq"), env=self.env, capture_output=True, text=True,
                                     timeout=30).stdout.split()
            except (OSError, subprocess.TimeoutExpired):
                ids = []
            if ids:
                rep["notes"].append(f"docker rm -f {len(ids)} container(s)")
                if self.quiet(self.docker("rm", "-f", *ids), 180) != 0:
                    rep["forced"].append(f"docker rm -f {' '.join(ids)} failed")
        conf = self.tpl_conf if self.tpl_conf.exists() else self.cold_conf
        stored = {p.name for p in self.kata_root.iterdir()} if self.kata_root.is_dir() else set()
        for cid in self.kata_ids:
            if cid in stored or self.kata_procs_of([cid]):
                self.quiet(self.kata(conf, "kill", cid, "KILL"), 30)
                self.quiet(self.kata(conf, "delete", "--force", cid), 60)
        for cid in self.runc_ids:
            if (self.runc_root / cid).exists():
                self.quiet([self.runc, "--root", str(self.runc_root), "delete", "--force", cid], 30)
        rep["dockerd"] = self.stop_daemon("dockerd", 30)
        rep["containerd"] = self.stop_daemon("containerd", 30)
        for which in ("dockerd", "containerd"):
            if "SIGKILL" in rep[which]:
                rep["forced"].append(f"{which} {rep[which]}")
        if self.factory_made:
            env = dict(self.env, KATA_CONF_FILE=str(self.tpl_conf))
            if self.quiet([self.runtime, "factory", "destroy"], 60, env) != 0:
                rep["forced"].append("kata-runtime factory destroy failed")
        time.sleep(0.3)
        for proc, cmd in self.ours():  # shims, VMs, proxies, a hung CLI: all should be gone by now
            rep["forced"].append(f"process pid {proc.pid}: {cmd}")
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs([p for p, _ in self.ours()], timeout=5)
        rep["unmounted"] = []
        for _ in range(3):
            points = mounts_under(str(self.work)) + mounts_naming(self.ids, 8)
            if not points:
                break
            for point in points:
                if point not in rep["unmounted"]:
                    rep["unmounted"].append(point)
                if self.quiet(["umount", point], 10) != 0:
                    self.quiet(["umount", "-l", point], 10)
        # the graph driver's own mounts of its home may outlive dockerd; container mounts may not
        rep["forced"] += [f"mount {m}" for m in rep["unmounted"] if not re.fullmatch(
            re.escape(str(self.work / "d")) + r"(/(overlay2|vfs|plugins|containers))?", m)]
        shared_left = []
        for cid in self.ids:  # the runtime's shared directory, outside our work dir
            shared = SHARED_ROOT / cid
            if shared.is_dir() and not mounts_under(str(shared)):
                shared_left.append(cid)
                shutil.rmtree(shared, ignore_errors=True)
        if shared_left:
            rep["shared_dirs_left"] = shared_left
            rep["forced"].append(f"kata-runtime left its shared dir {SHARED_ROOT}/<id> of {len(shared_left)} "
                                 f"container(s) (removed): {', '.join(i[:12] for i in shared_left)}")
        rep["cgroups"] = remove_cgroup_parent(self.cgroup_parent)
        rep["forced"] += [f"cgroup {c} not empty" for c in rep["cgroups"]]
        if not mounts_under(str(self.work)):
            shutil.rmtree(self.work, ignore_errors=True)
        # what is left now is a failure of the clean-up itself
        left = [f"process pid {p.pid}: {c}" for p, c in self.ours()]
        left += [f"mount {m}" for m in mounts_under(str(self.work)) + mounts_naming(self.ids, 8)]
        if self.work.exists():
            left.append(f"{self.work} not removed")
        left += [f"{SHARED_ROOT / cid} not removed" for cid in self.ids if (SHARED_ROOT / cid).exists()]
        rep["still_left"] = left
        return rep


# ------------------------------------------------------------------------------------------ measuring

def measure(args: argparse.Namespace, h: Harness, res: dict[str, Any]) -> None:
    h.say(f"work dir {h.work}; load {res['load_start']}; {args.repeat} repetition(s), {args.execs} exec(s)"
          f"{'; VM template' if args.template else '; cold boots (no template)'}")
    for d in ("out", "cid", "cli", "kr", "rr"):
        (h.work / d).mkdir()
    h.write_kata_configs()
    if args.template:
        h.say("kata-runtime factory init")
        r = h.factory_init()
        res["factory_init"] = r
        if r["ok"]:
            h.say(f"factory init: {r['wall']:.2f} s")
        else:
            h.say(f"factory init FAILED ({r.get('error')}): the 'template' kata runs will boot cold")
    res["containerd_start"] = h.start_containerd()
    h.say(f"containerd up in {res['containerd_start']['seconds']:.2f} s")
    res["dockerd_start"] = h.start_dockerd(args.template)
    h.say(f"dockerd up in {res['dockerd_start']['seconds']:.2f} s (storage driver {h.storage_driver})")
    res["image"] = h.make_image()
    h.say(f"image {IMAGE} imported in {res['image']['seconds']:.2f} s")
    bundle_true = h.work / "b-true"
    bundle_sleep = h.work / "b-sleep"
    make_bundle(bundle_true, ["true"], None, h.runc)
    make_bundle(bundle_sleep, ["sleep", "1000"], bundle_true / "rootfs", h.runc)
    conf = h.tpl_conf if args.template else h.cold_conf

    modes: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
        ("docker_kata", lambda i: h.docker_run("kata", f"dk{i}")),
        ("docker_runc", lambda i: h.docker_run("runc", f"dr{i}")),
        ("kata_run", lambda i: h.kata_run(conf, f"k{i}", bundle_true)),
        ("runc_run", lambda i: h.runc_run(f"r{i}", bundle_true)),
    ]
    if args.template and not args.short:
        modes[1:1] = [("docker_kata_cold", lambda i: h.docker_run("kata-cold", f"dc{i}"))]
        modes.insert(4, ("kata_run_cold", lambda i: h.kata_run(h.cold_conf, f"c{i}", bundle_true)))
    res["modes"] = [m for m, _ in modes]
    rounds = [(f"w{i}", "warm-up", "warmup") for i in range(args.warmup)]
    rounds += [(str(i), f"{i + 1}/{args.repeat}", "runs") for i in range(args.repeat)]
    for idx, shown, group in rounds:
        for key, fn in modes:
            load = loadavg()
            r = fn(idx)
            r["load"] = load
            res[group].setdefault(key, []).append(r)
            failed = "" if r["ok"] else f" FAILED: {r.get('error')}"
            h.say(f"{shown} {key}: {fmt_s(r['wall'])}{failed}")

    measure_exec(args, h, res, conf, bundle_sleep)


def measure_exec(args: argparse.Namespace, h: Harness, res: dict[str, Any], conf: Path, bundle: Path) -> None:
    """One sleeping container of each kind, started one after the other; then round-robin execs."""
    targets: dict[str, dict[str, Any]] = {}
    res["exec_targets"] = targets
    for runtime, short in (("kata", "xdk"), ("runc", "xdr")):
        name = h.name(short)
        cidfile = h.work / "cid" / name
        r = h.timed(h.docker("run", "-d", f"--runtime={runtime}", "--net=none", "--name", name, "--cidfile",
                             str(cidfile), IMAGE, "sleep", "1000"), name)
        r.update(name=name, id=read(cidfile).strip())
        if r["id"]:
            h.ids.append(r["id"])
        r["ok"] = r["rc"] == 0 and bool(r["id"])
        targets[f"docker_{runtime}"] = r
        h.say(f"exec target: docker run -d --runtime={runtime} sleep 1000: {fmt_s(r['wall'])}"
              f"{'' if r['ok'] else ' FAILED: ' + str(r.get('error'))}")
    kid = h.name("xk")
    h.kata_ids.append(kid)
    r = h.timed(h.kata(conf, "create", "--bundle", str(bundle), kid), kid + "-create")
    if r["rc"] == 0:
        s = h.timed(h.kata(conf, "start", kid), kid + "-start")
        r.update(start_wall=s["wall"], start_rc=s["rc"])
        if s["rc"] != 0:
            r["error"] = f"start: {s.get('error')}"
    r.update(id=kid, ok=r["rc"] == 0 and r.get("start_rc") == 0)
    targets["kata"] = r
    h.say(f"exec target: kata-runtime create + start sleep 1000: {fmt_s(r['wall'])} + "
          f"{fmt_s(r.get('start_wall'))}{'' if r['ok'] else ' FAILED: ' + str(r.get('error'))}")
    rid = h.name("xr")
    h.runc_ids.append(rid)
    r = h.timed([h.runc, "--root", str(h.runc_root), "run", "-d", "--bundle", str(bundle), rid], rid)
    r.update(id=rid, ok=r["rc"] == 0)
    targets["runc"] = r
    h.say(f"exec target: runc run -d sleep 1000: {fmt_s(r['wall'])}"
          f"{'' if r['ok'] else ' FAILED: ' + str(r.get('error'))}")

    modes: list[tuple[str, str, Callable[[], list[str]]]] = [
        ("docker_exec_kata", "docker_kata", lambda: h.docker("exec", targets["docker_kata"]["id"], "true")),
        ("kata_exec", "kata", lambda: h.kata(conf, "exec", kid, "true")),
        ("docker_exec_runc", "docker_runc", lambda: h.docker("exec", targets["docker_runc"]["id"], "true")),
        ("runc_exec", "runc", lambda: [h.runc, "--root", str(h.runc_root), "exec", rid, "true"]),
    ]
    rounds = [(f"w{i}", "warm-up", "exec_warmup") for i in range(args.warmup)]
    rounds += [(str(i), f"{i + 1}/{args.execs}", "execs") for i in range(args.execs)]
    for idx, shown, group in rounds:
        for key, target, argv in modes:
            if not targets[target]["ok"]:
                continue
            load = loadavg()
            r = h.timed(argv(), f"{key}{idx}", timeout=args.exec_timeout)
            r.update(load=load, ok=r["rc"] == 0 and "error" not in r)
            if not r["ok"] and target in ("docker_kata", "kata"):  # what the exec left running
                cid = targets[target]["id"]
                shims = [re.sub(r"^.*?(--container)", r"kata-shim \1", c) for _, c in h.ours(("kata-shim",))
                         if cid in c]
                r["shims_after"] = shims
                r["error"] = (f"{r.get('error')}; kata-shims of the container's processes still running "
                              f"after it: {len(shims)}" + (f" ({'; '.join(shims)})" if shims else ""))
            res[group].setdefault(key, []).append(r)
            failed = "" if r["ok"] else f" FAILED: {r.get('error')}"
            h.say(f"exec {shown} {key}: {fmt_s(r['wall'])}{failed}")

    stops: dict[str, Any] = {}
    res["exec_stop"] = stops
    for key in ("docker_kata", "docker_runc"):
        t = targets[key]
        if t.get("id") or t.get("name"):
            r = h.timed(h.docker("rm", "-f", t.get("id") or t["name"]), f"rm-{t['name']}")
            stops[key] = {"wall": r["wall"], "rc": r["rc"], "error": r.get("error")}
    if (h.kata_root / kid).exists() or h.kata_procs_of([kid]):
        k = h.timed(h.kata(conf, "kill", kid, "KILL"), kid + "-kill")
        time.sleep(0.5)
        d = h.timed(h.kata(conf, "delete", kid), kid + "-delete")
        if d["rc"] != 0:
            time.sleep(1)
            d = h.timed(h.kata(conf, "delete", "--force", kid), kid + "-delete-force")
        stops["kata"] = {"kill_rc": k["rc"], "delete_rc": d["rc"], "delete_wall": d["wall"], "error": d.get("error")}
    if (h.runc_root / rid).exists():
        h.quiet([h.runc, "--root", str(h.runc_root), "kill", rid, "KILL"], 30)
        time.sleep(0.2)
        rc = h.quiet([h.runc, "--root", str(h.runc_root), "delete", "--force", rid], 30)
        stops["runc"] = {"delete_rc": rc}
    ids = [targets["docker_kata"].get("id", ""), kid]
    left = h.wait_gone([i for i in ids if i])
    if left:
        stops["left_behind"] = left
        h.say(f"exec targets left behind: {left}")


# ------------------------------------------------------------------------------------------- reporting

def attach_calls(res: dict[str, Any], calls: list[dict[str, Any]]) -> None:
    """Give every timed record the kata-runtime calls that started while it ran."""
    records = [r for g in ("runs", "execs", "warmup", "exec_warmup") for rows in res.get(g, {}).values() for r in rows]
    records += list((res.get("exec_targets") or {}).values())
    for r in records:
        lo, hi = r.get("t_start"), r.get("t_end")
        if lo is None or hi is None:
            continue
        mine = [c for c in calls if lo <= c["t0"] <= hi]
        r["runtime_calls"] = [{k: c[k] for k in ("sub", "wall", "rc", "args")} for c in mine]
        inside = union_within([(c["t0"], c["t1"]) for c in mine], lo, hi)
        r["in_runtime"] = round(inside, 3)
        r["outside_runtime"] = round(r["wall"] - inside, 3)


def call_stats(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r.get("ok") and "runtime_calls" in r]
    if not ok:
        return None
    per_sub: dict[str, list[float]] = {}
    per_count: dict[str, list[int]] = {}
    subs = {c["sub"] for r in ok for c in r["runtime_calls"]}
    for r in ok:
        for sub in subs:
            mine = [c["wall"] for c in r["runtime_calls"] if c["sub"] == sub]
            per_sub.setdefault(sub, []).append(sum(mine))
            per_count.setdefault(sub, []).append(len(mine))
    order: dict[str, int] = {}
    for r in ok:
        for c in r["runtime_calls"]:
            order.setdefault(c["sub"], len(order))
    return {
        "calls": median([len(r["runtime_calls"]) for r in ok]),
        "subs": {k: median(v) for k, v in sorted(per_sub.items(), key=lambda kv: order.get(kv[0], 99))},
        "counts": {k: median(v) for k, v in per_count.items()},
        "in_runtime": (minimum([r["in_runtime"] for r in ok]), median([r["in_runtime"] for r in ok])),
        "outside_runtime": (minimum([r["outside_runtime"] for r in ok]),
                            median([r["outside_runtime"] for r in ok])),
    }


def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["wall"] for r in rows if r.get("ok")]
    return {"n": len(ok), "of": len(rows), "min": minimum(ok), "median": median(ok)}


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {k: stats(v) for k, v in res["runs"].items()}
    s.update({k: stats(v) for k, v in res["execs"].items()})
    s["calls"] = {k: cs for g in ("runs", "execs") for k, v in res[g].items()
                  if k.startswith(("docker_kata", "docker_exec_kata")) and (cs := call_stats(v))}
    s["docker_over_kata"] = diff(s.get("docker_kata", {}).get("median"), s.get("kata_run", {}).get("median"))
    s["docker_over_kata_cold"] = diff(s.get("docker_kata_cold", {}).get("median"),
                                            s.get("kata_run_cold", {}).get("median"))
    s["docker_over_runc"] = diff(s.get("docker_runc", {}).get("median"), s.get("runc_run", {}).get("median"))
    s["docker_exec_over_kata"] = diff(s.get("docker_exec_kata", {}).get("median"),
                                            s.get("kata_exec", {}).get("median"))
    s["docker_exec_over_runc"] = diff(s.get("docker_exec_runc", {}).get("median"),
                                            s.get("runc_exec", {}).get("median"))
    return s


def failures(res: dict[str, Any]) -> list[str]:
    out = []
    fi = res.get("factory_init")
    if fi and not fi.get("ok"):
        out.append(f"factory init: {fi.get('error')}")
    for group in ("warmup", "runs", "exec_warmup", "execs"):
        for key, rows in res.get(group, {}).items():
            what = f"{key} warm-up" if "warmup" in group else key
            out += [f"{what} #{i + 1}: {r.get('error')}" for i, r in enumerate(rows) if not r.get("ok")]
    for key, t in (res.get("exec_targets") or {}).items():
        if not t.get("ok"):
            out.append(f"exec target {key}: {t.get('error')}")
    for key, st in (res.get("exec_stop") or {}).items():
        if isinstance(st, dict) and st.get("error"):
            out.append(f"stopping exec target {key}: {st['error']}")
    if (res.get("exec_stop") or {}).get("left_behind"):
        out.append(f"exec targets left behind: {res['exec_stop']['left_behind']}")
    if res.get("error"):
        out.append(res["error"])
    return out


def _times(n: float) -> str:
    return "" if n == 1 else f" ×{n:g}"


def render_markdown(res: dict[str, Any]) -> str:
    s = res["summary"]
    f = res.get("host", {})
    tpl = res.get("template")
    fi = res.get("factory_init") or {}
    if tpl:
        kconf = (f"VM template (`[factory] enable_template`, `factory init` took {fmt_s(fi.get('wall'))})"
                 if fi.get("ok") else "VM template requested, but `factory init` FAILED: kata VMs booted cold")
    else:
        kconf = "cold boots (--no-template)"
    ds = res.get("dockerd_start") or {}
    lines = [
        f"Host: {f.get('cpu', '?')}, {f.get('cores')} cores, {f.get('mem_total_gib')} GiB; QEMU "
        f"{f.get('qemu_version', '?')}, machine {f.get('machine', '?')}, guest {f.get('vcpus')} vCPU / "
        f"{f.get('guest_mem_mib')} MiB; host kernel {f.get('host_kernel')}; {res.get('docker_version', 'docker ?')}, "
        f"storage driver {ds.get('storage_driver') or '?'}, containerd {res.get('containerd_version', '?')}, runc "
        f"{f.get('runc_version', '?')}. kata: {kconf}. Load average (1/5/15 min) "
        f"{'/'.join(map(str, res['load_start']))} at start, {'/'.join(map(str, res.get('load_end', [])))} at end. "
        f"{res.get('finished', res['started'])[:16].replace('T', ' ')} UTC, {res['repeat']} repetition(s), "
        f"{res['execs_n']} exec(s) each, interleaved, after {res.get('warmup_n', 0)} uncounted warm-up round(s).",
        "",
        "| start and exit of `true` (wall) | runs ok | min | median |",
        "| --- | ---: | ---: | ---: |",
    ]
    tsuffix = ", VM from the template" if tpl and fi.get("ok") else ""

    def row(key: str, label: str) -> None:
        st = s.get(key)
        if st is None:
            return
        lines.append(f"| {label} | {st['n']}/{st['of']} | {fmt_s(st['min'])} | {fmt_s(st['median'])} |")
        cs = (s.get("calls") or {}).get(key)
        if cs:
            counts = cs.get("counts") or {}
            subs = ", ".join(f"{k}{_times(counts.get(k, 0))} {fmt_s(v)}" for k, v in cs["subs"].items())
            lo, med = cs["in_runtime"]
            lines.append(f"| &nbsp;&nbsp;of which inside kata-runtime calls ({cs['calls']:g} a run; medians: "
                         f"{subs or '-'}) | | {fmt_s(lo)} | {fmt_s(med)} |")
            lo, med = cs["outside_runtime"]
            lines.append(f"| &nbsp;&nbsp;of which outside them (docker CLI, dockerd, containerd, shim) | | "
                         f"{fmt_s(lo)} | {fmt_s(med)} |")

    def over(key: str, label: str, goal: float | None = None) -> None:
        v = s.get(key)
        if v is None and key not in s:
            return
        g = ""
        if goal is not None and v is not None:
            g = f" (goal < {goal} s: {'met' if v < goal else f'missed by {v - goal:.2f} s'})"
        lines.append(f"| {label}{g} | | | {fmt_s(v)} |")

    row("docker_kata", f"(1) {RUN_MODES['docker_kata']}{tsuffix}")
    row("kata_run", f"(3) {RUN_MODES['kata_run']}{tsuffix}")
    if s.get("docker_kata") or s.get("kata_run"):
        over("docker_over_kata", "**docker's overhead on top of kata-runtime: (1) − (3), medians**",
             GOAL_DOCKER_OVERHEAD)
    if "docker_kata_cold" in s:
        row("docker_kata_cold", RUN_MODES["docker_kata_cold"])
        row("kata_run_cold", RUN_MODES["kata_run_cold"])
        over("docker_over_kata_cold", "docker's overhead on top of kata-runtime, cold boots (medians)")
    row("docker_runc", f"(2) {RUN_MODES['docker_runc']}")
    row("runc_run", RUN_MODES["runc_run"])
    over("docker_over_runc", "docker's overhead on top of runc (medians)")
    lines += ["", "| exec of `true` in a running `sleep 1000` container (wall) | runs ok | min | median |",
              "| --- | ---: | ---: | ---: |"]
    for key, label in EXEC_MODES.items():
        row(key, label)
        if key == "kata_exec":
            over("docker_exec_over_kata", "docker's exec overhead on top of kata-runtime (medians)")
        if key == "runc_exec":
            over("docker_exec_over_runc", "docker's exec overhead on top of runc (medians)")
    t = res.get("exec_targets") or {}
    parts = []
    if "docker_kata" in t:
        parts.append(f"`docker run -d --runtime=kata` {fmt_s(t['docker_kata'].get('wall'))}")
    if "docker_runc" in t:
        parts.append(f"`docker run -d --runtime=runc` {fmt_s(t['docker_runc'].get('wall'))}")
    if "kata" in t:
        parts.append(f"`kata-runtime create` + `start` {fmt_s(t['kata'].get('wall'))} + "
                     f"{fmt_s(t['kata'].get('start_wall'))}")
    if "runc" in t:
        parts.append(f"`runc run -d` {fmt_s(t['runc'].get('wall'))}")
    if parts:
        lines += ["", "Exec targets started (one after the other, once): " + ", ".join(parts) + "."]
    c = res.get("cleanup") or {}
    forced = c.get("forced") or []
    still = c.get("still_left") or []
    if c:
        lines += ["", "Clean-up: " + ("nothing of ours was left behind." if not forced and not still else
                                       f"had to remove by force: {'; '.join(forced) or '-'}"
                                       + (f"; STILL LEFT: {'; '.join(still)}" if still else "") + ".")]
    errs = failures(res)
    if errs:
        lines += ["", "Failed: " + "; ".join(errs)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--short", action="store_true", help="1 repetition, 3 execs, no cold runs (CI)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions of each run mode (default 5; 1 with --short)")
    ap.add_argument("--execs", type=int, default=None, help="execs per exec mode (default 10; 3 with --short)")
    ap.add_argument("--json", type=Path, help="write all raw numbers here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    ap.add_argument("--runtime", default="", help="kata-runtime (default /opt/kata-dev/bin/kata-runtime, else PATH)")
    ap.add_argument("--runc", default=default_runc(), help="runc binary")
    ap.add_argument("--template", action=argparse.BooleanOptionalAction, default=True,
                    help="kata runs clone a VM template (default); --no-template: cold boots only")
    ap.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True,
                    help="call kata-runtime through a bash wrapper that logs each call's times (default), to "
                    "split docker's time into kata-runtime calls and the rest")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted runs of each mode first (default 1)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one run may take (120; 60 with --short)")
    ap.add_argument("--exec-timeout", type=float, default=30.0, help="seconds one exec may take (30)")
    ap.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: print the tables of an "
                    "earlier run's --json file (with --markdown FILE: write them there too)")
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.short else 5
    if args.timeout is None:
        args.timeout = 60.0 if args.short else 120.0
    if args.execs is None:
        args.execs = 3 if args.short else 10
    args.runtime = args.runtime or default_runtime()
    args.runtime = os.path.abspath(shutil.which(args.runtime) or args.runtime)
    return args


def versions(res: dict[str, Any]) -> None:
    try:
        out = subprocess.run([DOCKER, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        res["docker_version"] = out.replace("Docker version ", "docker ").split(",")[0]
        words = subprocess.run(["containerd", "--version"], capture_output=True, text=True,
                               timeout=10).stdout.split()
        res["containerd_version"] = words[2] if len(words) > 2 else "?"
    except (OSError, subprocess.TimeoutExpired):
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render_saved(args.render, args.markdown, summarize, render_markdown)
    refused = needs_root("engines.py", "dockerd, containerd, QEMU's mounts, runc",
                         (DOCKER, "dockerd", "containerd", "containerd-shim-runc-v2", "ctr", args.runc, args.runtime,
                          "/bin/busybox"))
    if refused is not None:
        return refused
    unwind_on_signals()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kata-bench-engines."))
    work.chmod(0o711)
    h = Harness(work, args.runtime, args.runc, args.timeout, say, trace=args.trace)
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeat": args.repeat,
        "execs_n": args.execs, "short": args.short, "template": args.template, "runtime": args.runtime,
        "work": str(work), "load_start": loadavg(), "host": host_facts(args.runtime),
        "warmup_n": args.warmup, "runs": {}, "execs": {}, "warmup": {}, "exec_warmup": {}}
    versions(res)

    def cleanup() -> None:
        try:
            res["runtime_calls"] = parse_calls(h.calls_log)
            attach_calls(res, res["runtime_calls"])
        except Exception as e:  # noqa: BLE001 - the trace is an extra
            res["runtime_calls_error"] = str(e)
        report_cleanup(res, h.cleanup(), say)

    status = guarded(lambda: measure(args, h, res), res, say, cleanup)
    res["load_end"] = loadavg()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["seconds"] = round(time.monotonic() - t_start, 1)
    res["summary"] = summarize(res)
    write_results(res, render_markdown(res), args.markdown, args.json)
    say(f"done in {res['seconds']:.0f} s")
    if status == 0 and (failures(res) or res["cleanup"].get("forced") or res["cleanup"].get("still_left")):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
