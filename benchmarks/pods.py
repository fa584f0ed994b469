#!/usr/bin/env python3
"""Pods over containerd's CRI: start time and host memory of a pod of K containers, kata beside runc.

    python benchmarks/pods.py [--short] [--repeat N] [--json FILE] [--markdown FILE] [--no-template]

Starts a private containerd with its CRI plugin (everything in /tmp/kata-bench-pods.*: root, state,
sockets, CNI configuration with a bridge and a 10.216.N.0/24 of its own), runtime handlers ``kata``
(containerd-shim v1 + kata-runtime, pods from a VM template unless --no-template) and ``runc``
(io.containerd.runc.v2). Then, interleaved handler by handler, for each pod size K in (1, 2, 4)
(``--short``: 1, 2) and N repetitions: RunPodSandbox, K times CreateContainer + StartContainer of
busybox ``sleep 100000``, a few seconds idle, the host PSS of every process of the pod by role
(/proc/<pid>/smaps_rollup), StopPodSandbox + RemovePodSandbox and a check that nothing of the pod
is left. Goals (kata): each extra container costs <= 6 MB host PSS and <= 1 s to start.

Everything is removed at the end, also on failure, Ctrl-C or SIGTERM; exit 1 when a run failed or
something was left behind, never because of a number. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: the repository on sys.path for ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    INSTALLED_CONFIG,
    MB,
    SHARED_ROOT,
    cmdline,
    default_runc,
    default_runtime,
    fmt_s,
    guarded,
    has_pair,
    host_facts,
    loadavg,
    median,
    minimum,
    mounts_under,
    mounts_where,
    needs_root,
    one_line,
    parse_calls,
    progress,
    quiet,
    remove_cgroup_parent,
    render_saved,
    report_cleanup,
    signals_held,
    smaps_rollup,
    union_within,
    unwind_on_signals,
    with_factory_keys,
    write_results,
    write_trace_wrapper,
)
from tests.cri.cri import CRI, CRIError  # noqa: E402 - after sys.path
from tests.cri.images import PAUSE_CMD, write_oci_archive  # noqa: E402

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
RUNC = default_runc()
CNI_BIN = "/usr/lib/cni"
NAMESPACE = "k8s.io"
PAUSE_IMAGE = "localhost/kbench/pause:1"
BUSYBOX_IMAGE = "localhost/kbench/busybox:1"
WORKLOAD = ["sleep", "100000"]
HANDLERS = ("kata", "runc")
MARK_ENV = "KATA_BENCH_PODS"  # in containerd's environment: every shim and runtime inherits it
GOAL_EXTRA_PSS_MB = 6.0  # host PSS of each extra container of a kata pod
GOAL_EXTRA_START_S = 1.0  # CreateContainer + StartContainer of each extra container of a kata pod
ROLES = {  # key: label
    "qemu": "QEMU", "kata-proxy": "kata-proxy", "kata-netmon": "kata-netmon", "kata-shim": "kata-shims",
    "containerd-shim": "containerd-shims", "containers": "containers' processes"}
say = progress("pods")


def _run(*argv: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def free_subnet() -> int:
    """N of a 10.216.N.0/24 that no interface or route of this host uses (the CRI tests use 10.215.N)."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show", "table", "all").stdout
    for n in range(10, 250):
        if not re.search(rf"\b10\.216\.{n}\.", used):
            return n
    raise RuntimeError("no free 10.216.N.0/24")


def kata_config(template: bool, template_path: Path) -> str:
    """The installed configuration with [factory] enable_template and template_path set."""
    return with_factory_keys(INSTALLED_CONFIG.read_text(), enable_template=template, template_path=str(template_path))


def pod_netns(status: Any) -> set[str]:
    """The network namespace path(s) of a pod, from PodSandboxStatus(verbose) info."""
    out = set()
    for v in status.info.values():
        try:
            info = json.loads(v)
        except ValueError:
            continue
        for ns in (((info.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []):
            if ns.get("type") == "network" and ns.get("path"):
                out.add(ns["path"])
    return out


def remove_netns(path: str) -> None:
    subprocess.run(["umount", "-l", path], capture_output=True)
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------------------- the harness

class Harness:
    """The private containerd (CRI, CNI bridge, both handlers) and everything made through it."""

    def __init__(self, work: Path, runtime: str, template: bool, timeout: float, trace: bool = True) -> None:
        self.work = work
        self.runtime = runtime
        self.calls_log = work / "runtime-calls.log"
        self.engine = runtime  # what containerd runs as the kata handler's runtime_engine
        if trace:
            self.engine = write_trace_wrapper(work / "kata-runtime", runtime, self.calls_log)
        self.template = template
        self.timeout = timeout
        self.bridge = "kbp-" + work.name.split(".", 1)[1][:8]
        self.subnet = self.gateway = ""
        self.kata_conf = work / "configuration.toml"
        self.template_dir = work / "template"
        self.sock = str(work / "containerd.sock")
        self.log = work / "containerd.log"
        self.kata_root = work / "kata-root" / NAMESPACE
        self.runc_root = work / "runc-root" / NAMESPACE
        self.proc: subprocess.Popen[bytes] | None = None
        self.cri: CRI | None = None
        self.ids: set[str] = set()  # every pod and container id we got
        self.netns: set[str] = set()
        self.factory_made = False
        self.bridge_made = False
        self.iptables: list[list[str]] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ, KATA_CONF_FILE=str(self.kata_conf), **{MARK_ENV: str(self.work)})
        env["PATH"] = f"{Path(self.runtime).parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        return env

    def log_errors(self, n: int = 3) -> list[str]:
        """The last error lines of containerd's log (what a shim or kata-runtime said)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln[:600] for ln in lines if "level=error" in ln][-n:]

    # ------------------------------------------------------------------------------- set-up
    def setup(self, res: dict[str, Any]) -> None:
        d = self.work
        for sub in ("root", "state", "opt", "cni", "kata-root", "runc-root", "logs"):
            (d / sub).mkdir()
        n = free_subnet()
        self.subnet, self.gateway = f"10.216.{n}.0/24", f"10.216.{n}.1"
        # the bridge is ours from the start (the CNI bridge plugin adopts it), so that we remove it
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self.bridge_made = True
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "0" and shutil.which("iptables"):
            for rule in (["FORWARD", "-i", self.bridge, "!", "-o", self.bridge, "-j", "DROP"],
                         ["FORWARD", "-o", self.bridge, "!", "-i", self.bridge, "-j", "DROP"]):
                if _run("iptables", "-I", *rule, check=False).returncode == 0:
                    self.iptables.append(rule)  # nothing of the pods leaves the machine
        self.kata_conf.write_text(kata_config(self.template, self.template_dir))
        (d / "cni" / "10-kbench.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": self.bridge, "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(d / "cni-ipam")}},
                {"type": "loopback"}]}, indent=1))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "containerd.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.runtime.v1.linux"]
  shim = "containerd-shim"
  runtime = "runc"
  runtime_root = "{d}/runtime-v1"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d}/runc-root"
[{cri}.containerd.runtimes.kata]
  runtime_type = "io.containerd.runtime.v1.linux"
  runtime_engine = "{self.engine}"
  runtime_root = "{d}/kata-root"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{d}/cni"
  max_conf_num = 1
""")
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CONTAINERD, "--config", str(d / "containerd.toml")], cwd="/",
                                         env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        self.cri = CRI(self.sock, binary=CONTAINERD, timeout=self.timeout)
        last: Any = None
        while time.monotonic() < t0 + 60:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}): {self.log_errors(1)}")
            try:
                st = self.cri.status()
                conds = {c.type: c.status for c in st.status.conditions}
                if conds.get("RuntimeReady") and conds.get("NetworkReady"):
                    break
                last = st.status
            except CRIError as e:
                last = e
            time.sleep(0.2)
        else:
            raise RuntimeError(f"containerd's CRI not ready after 60 s: {one_line(str(last))}")
        res["containerd_start"] = round(time.monotonic() - t0, 3)
        say(f"containerd up in {res['containerd_start']:.2f} s (bridge {self.bridge}, {self.subnet})")
        archive = write_oci_archive(d / "images.tar", {PAUSE_IMAGE: {"Entrypoint": PAUSE_CMD},
                                                       BUSYBOX_IMAGE: {"Cmd": ["/bin/sh"]}})
        _run(CTR, "--address", self.sock, "-n", NAMESPACE, "images", "import", "--all-platforms", str(archive))
        archive.unlink()
        for image in (PAUSE_IMAGE, BUSYBOX_IMAGE):
            if not self.cri.image_status(image).id:
                raise RuntimeError(f"{image} not seen by the CRI after import")
        if self.template and "kata" in res["handlers"]:
            say("kata-runtime factory init")
            self.factory_made = True  # from here on, clean-up destroys it
            t0 = time.monotonic()
            p = _run(self.runtime, "factory", "init", check=False, timeout=300, env=self.env())
            res["factory_init"] = {"wall": round(time.monotonic() - t0, 3), "rc": p.returncode,
                                   "error": one_line(p.stderr or p.stdout) if p.returncode else None}
            if p.returncode != 0:
                raise RuntimeError(f"kata-runtime factory init failed ({p.returncode}): "
                                   f"{one_line(p.stderr or p.stdout)}")
            say(f"factory init: {res['factory_init']['wall']:.2f} s")

    # ------------------------------------------------------------------------------- a pod
    def pod_config(self, name: str) -> dict[str, Any]:
        uid = str(uuid.uuid4())
        logdir = self.work / "logs" / f"{name}_{uid}"
        logdir.mkdir(parents=True)
        nso = {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}}
        return {"metadata": {"name": name, "uid": uid, "namespace": "kbench", "attempt": 0}, "hostname": name,
                "log_directory": str(logdir), "labels": {"io.kubernetes.pod.name": name, "kbench": "1"},
                "linux": {"cgroup_parent": f"/{self.work.name}/pod{uid}", "security_context": nso}}

    def container_config(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "attempt": 0}, "image": {"image": BUSYBOX_IMAGE}, "command": WORKLOAD,
                "working_dir": "/", "labels": {"io.kubernetes.container.name": name}, "log_path": f"{name}/0.log",
                "linux": {"security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER",
                                                                     "ipc": "POD"}}}}

    def pod_processes(self, handler: str, pod: str, containers: list[str]) -> dict[str, list[psutil.Process]]:
        """The host processes of a pod by role. kata: QEMU (``-name sandbox-<pod>``), kata-proxy and
        kata-netmon (``--sandbox <pod>``), the kata-shims (``--container <id>``), one containerd-shim
        v1 per container (``-workdir .../<id>``); runc: the containerd-shim-runc-v2 (``-id <pod>``:
        containerd groups a pod's containers in its sandbox's shim) and its descendants."""
        ids = [pod, *containers]
        found: dict[str, list[psutil.Process]] = {r: [] for r in ROLES}
        me = os.getpid()
        for p in psutil.process_iter():
            argv = cmdline(p)
            if p.pid == me or not argv:
                continue
            name, joined = os.path.basename(argv[0]), " ".join(argv) + " "
            if name == "containerd-shim" and self.sock in joined and \
                    any(a.rstrip("/").endswith("/" + i) for a in argv for i in ids):
                found["containerd-shim"].append(p)
            elif name == "containerd-shim-runc-v2" and self.sock in joined and any(has_pair(argv, "-id", i)
                                                                                  for i in ids):
                found["containerd-shim"].append(p)
            elif handler != "kata":
                continue
            elif "qemu" in name and f"sandbox-{pod} " in joined:
                found["qemu"].append(p)
            elif any("kata-proxy" in a for a in argv[:3]) and has_pair(argv, "--sandbox", pod):
                found["kata-proxy"].append(p)
            elif any("kata-netmon" in a for a in argv[:3]) and has_pair(argv, "--sandbox", pod):
                found["kata-netmon"].append(p)
            elif any("kata-shim" in a for a in argv[:3]) and any(has_pair(argv, "--container", i) for i in ids):
                found["kata-shim"].append(p)
        if handler == "runc":
            seen = {p.pid for p in found["containerd-shim"]}
            for shim in found["containerd-shim"]:
                try:
                    kids = shim.children(recursive=True)
                except psutil.Error:
                    continue
                for kid in kids:
                    if kid.pid not in seen:
                        seen.add(kid.pid)
                        found["containers"].append(kid)
        return found

    def memory(self, handler: str, pod: str, containers: list[str]) -> dict[str, Any]:
        procs: list[dict[str, Any]] = []
        for role, ps in self.pod_processes(handler, pod, containers).items():
            for p in ps:
                roll = smaps_rollup(p.pid)
                if not roll:
                    continue  # gone meanwhile
                procs.append({"role": role, "pid": p.pid, "pss": roll.get("Pss", 0), "rss": roll.get("Rss", 0),
                              "pss_anon": roll.get("Pss_Anon"), "pss_file": roll.get("Pss_File"),
                              "cmd": " ".join(cmdline(p))[:200]})
        roles = {r: sum(x["pss"] for x in procs if x["role"] == r) for r in ROLES}
        counts = {r: sum(1 for x in procs if x["role"] == r) for r in ROLES}
        # descendants of the pod's shims that have none of the roles (a kata-runtime call still
        # running, say): kept in the JSON, not counted
        known = {x["pid"] for x in procs}
        other = []
        for x in [x for x in procs if x["role"] == "containerd-shim"]:
            try:
                kids = psutil.Process(x["pid"]).children(recursive=True)
            except psutil.Error:
                continue
            other += [{"pid": k.pid, "cmd": " ".join(cmdline(k))[:200]} for k in kids if k.pid not in known]
        return {"roles": roles, "counts": counts, "total": sum(roles.values()), "processes": procs,
                "uncounted": other}

    def leftovers(self, handler: str, pod: str, containers: list[str], netns: set[str]) -> list[str]:
        """What of a removed pod is still on the host: processes, mounts, network namespace, state."""
        ids = [pod, *containers]
        me = os.getpid()
        left = []
        for p in psutil.process_iter():
            argv = cmdline(p)
            if p.pid != me and argv and any(i in " ".join(argv) for i in ids):
                try:
                    if p.status() == psutil.STATUS_ZOMBIE:
                        continue
                except psutil.Error:
                    continue
                left.append(f"process {p.pid}: {' '.join(argv)[:160]}")
        left += [f"mount {m}" for m in mounts_where(lambda m: any(i in m for i in ids))]
        left += [f"network namespace {ns}" for ns in netns if os.path.exists(ns)]
        paths = [SHARED_ROOT / pod] + [r / i for r in (self.kata_root, self.runc_root) for i in ids]
        if handler == "kata":
            try:
                from kata_runtime.store import SandboxStore

                st = SandboxStore(self.kata_root)
                paths += [st.sandbox_dir(pod), st.vm_dir(pod), st.socket_dir(pod),
                          Path("/run/netns") / f"kata-{st.digest(pod)}"] + [st.members / i for i in ids]
            except Exception as e:  # noqa: BLE001 - the store's layout is the runtime's business
                left.append(f"(cannot check the kata store: {one_line(e)})")
        left += [f"{p}" for p in paths if p.exists() or p.is_symlink()]
        return sorted(set(left))

    def run_pod(self, handler: str, k: int, tag: str, idle: float, measure_memory: bool = True) -> dict[str, Any]:
        """One pod of ``k`` containers, timed, measured after ``idle`` s, removed and checked."""
        assert self.cri is not None
        cri = self.cri
        name = f"b{os.getpid()}-{handler}-{k}-{tag}"
        r: dict[str, Any] = {"handler": handler, "k": k, "tag": tag, "name": name, "load": loadavg(),
                             "containers": [], "ok": False}
        config = self.pod_config(name)
        pod, cids, netns = "", [], set()
        windows: list[tuple[str, float, float]] = []
        try:
            e0, t0 = time.time(), time.monotonic()
            pod = cri.run_pod_sandbox(config, handler, timeout=self.timeout)
            t1 = time.monotonic()
            windows = [("run_pod", e0, time.time())]
            self.ids.add(pod)
            r.update(pod=pod, run_pod=round(t1 - t0, 3))
            t = t1
            for i in range(k):
                ea, ta = time.time(), time.monotonic()
                cid = cri.create_container(pod, self.container_config(f"c{i}"), config, timeout=self.timeout)
                eb, tb = time.time(), time.monotonic()
                self.ids.add(cid)
                cids.append(cid)
                cri.start_container(cid, timeout=self.timeout)
                t = time.monotonic()
                windows += [(f"c{i}.create", ea, eb), (f"c{i}.start", eb, time.time())]
                r["containers"].append({"id": cid, "create": round(tb - ta, 3), "start": round(t - tb, 3)})
            r["to_last_running"] = round(t - t0, 3)
            r["first"] = round(r["containers"][0]["create"] + r["containers"][0]["start"], 3)
            extra = [c["create"] + c["start"] for c in r["containers"][1:]]
            r["extra_mean"] = round(statistics.mean(extra), 3) if extra else None
            netns = pod_netns(cri.pod_sandbox_status(pod, verbose=True))
            self.netns |= netns
            time.sleep(idle)
            states = {c: cri.container_state(c) for c in cids}
            if any(s != "CONTAINER_RUNNING" for s in states.values()):
                raise RuntimeError(f"not all containers running after {idle:g} s idle: {states}")
            if measure_memory:
                r["memory"] = self.memory(handler, pod, cids)
            r["ok"] = True
        except (CRIError, RuntimeError) as e:
            r["error"] = one_line(e)
            r["containerd_errors"] = self.log_errors()
        finally:
            if pod:  # StopPodSandbox + RemovePodSandbox, as kubelet does when a pod goes
                try:
                    if not netns:
                        netns = pod_netns(cri.pod_sandbox_status(pod, verbose=True))
                        self.netns |= netns
                    e0, t0 = time.time(), time.monotonic()
                    cri.stop_pod_sandbox(pod, timeout=self.timeout)
                    e1, t1 = time.time(), time.monotonic()
                    cri.remove_pod_sandbox(pod, timeout=self.timeout)
                    r.update(stop=round(t1 - t0, 3), remove=round(time.monotonic() - t1, 3))
                    windows += [("stop", e0, e1), ("remove", e1, time.time())]
                except CRIError as e:
                    r["ok"] = False
                    r.setdefault("error", f"removing the pod: {one_line(e)}")
                deadline = time.monotonic() + 15  # the VM and the shims go asynchronously
                while True:
                    left = self.leftovers(handler, pod, cids, netns)
                    if not left or time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
                if handler == "kata":
                    self.attach_calls(r, windows)
                if left:
                    r["ok"] = False
                    r["left_behind"] = left
                    r.setdefault("error", f"left behind after RemovePodSandbox: {'; '.join(left[:4])}")
        return r

    def attach_calls(self, r: dict[str, Any], windows: list[tuple[str, float, float]]) -> None:
        """The kata-runtime calls that started in each timed CRI call of the pod, and the time inside
        them (the union of their intervals, clipped to the CRI call)."""
        calls = parse_calls(self.calls_log)
        if not calls:
            return
        r["runtime_calls"], r["in_runtime"] = {}, {}
        for what, lo, hi in windows:
            mine = [c for c in calls if lo <= c["t0"] <= hi]
            r["runtime_calls"][what] = [{k: c[k] for k in ("sub", "wall", "rc")} for c in mine]
            r["in_runtime"][what] = round(union_within([(c["t0"], c["t1"]) for c in mine], lo, hi), 3)
        extra = [r["in_runtime"].get(f"c{i}.create", 0) + r["in_runtime"].get(f"c{i}.start", 0)
                 for i in range(1, r["k"])]
        r["in_runtime_extra"] = round(statistics.mean(extra), 3) if extra else None
        r["calls_extra"] = [c for i in range(1, r["k"]) for w in ("create", "start")
                            for c in r["runtime_calls"].get(f"c{i}.{w}", [])]

    # ------------------------------------------------------------------------------- clean-up
    def ours(self) -> list[tuple[psutil.Process, str]]:
        """Processes (but us) that name our work dir or one of our ids, or inherited our marker."""
        me = os.getpid()
        skip = {me} | {p.pid for p in psutil.Process(me).parents()}
        needles = [str(self.work)] + [i for i in self.ids if len(i) >= 12]
        out = []
        for p in psutil.process_iter():
            argv = cmdline(p)
            if p.pid in skip or not argv:
                continue
            joined = " ".join(argv)
            try:
                marked = p.environ().get(MARK_ENV) == str(self.work)
            except (psutil.Error, OSError):
                marked = False
            if marked or any(n in joined for n in needles):
                out.append((p, joined[:300]))
        return out

    def kata_paths(self, ids: list[str]) -> list[Path]:
        """kata-runtime's paths of ``ids`` outside our work dir that exist: shared directory, socket
        directory, network namespace."""
        paths = [SHARED_ROOT / i for i in ids]
        try:
            from kata_runtime.store import SandboxStore

            st = SandboxStore(self.kata_root)
            paths += [st.socket_dir(i) for i in ids] + [Path("/run/netns") / f"kata-{st.digest(i)}" for i in ids]
        except Exception:  # noqa: BLE001 - the store's layout is the runtime's business
            pass
        return [p for p in paths if p.exists() or p.is_symlink()]

    def cleanup(self) -> dict[str, Any]:
        """Remove everything whatever happened; what had to be removed by force is reported."""
        with signals_held():
            return self._cleanup()

    def _cleanup(self) -> dict[str, Any]:
        rep: dict[str, Any] = {"forced": [], "notes": [], "still_left": []}
        forced = rep["forced"]
        for d in (self.kata_root / "sbs", self.kata_root / "ctr", self.runc_root):  # also ids the CRI
            if d.is_dir():  # did not give us (a call interrupted midway)
                self.ids |= {p.name for p in d.iterdir() if len(p.name) >= 12}
        if self.cri is not None and self.proc is not None and self.proc.poll() is None:
            try:
                for pod in self.cri.list_pod_sandbox():
                    rep["notes"].append(f"pod {pod.metadata.name} still there: removed")
                    try:
                        self.netns |= pod_netns(self.cri.pod_sandbox_status(pod.id, verbose=True))
                        self.cri.stop_pod_sandbox(pod.id, timeout=120)
                        self.cri.remove_pod_sandbox(pod.id, timeout=120)
                    except CRIError as e:
                        forced.append(f"removing pod {pod.metadata.name}: {one_line(e)}")
            except CRIError as e:
                forced.append(f"ListPodSandbox: {one_line(e)}")
        if self.cri is not None:
            self.cri.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                forced.append("containerd ignored SIGTERM for 30 s: SIGKILL")
        env = self.env()
        for root, runtime in ((self.runc_root, RUNC), (self.kata_root, self.runtime)):
            if not root.is_dir():
                continue
            listed = subprocess.run([runtime, "--root", str(root), "list", "--quiet"], capture_output=True,
                                    text=True, env=env, timeout=120)
            for cid in listed.stdout.split():
                forced.append(f"{os.path.basename(runtime)} container left: {cid}")
                quiet([runtime, "--root", str(root), "kill", "--all", cid, "9"], 60, env)
                quiet([runtime, "--root", str(root), "delete", "--force", cid], 120, env)
        if self.factory_made and quiet([self.runtime, "factory", "destroy"], 120, env) != 0:
            forced.append("kata-runtime factory destroy failed")
        time.sleep(0.3)
        procs = self.ours()
        for p, cmd in procs:  # shims, VMs, proxies: all should be gone by now
            forced.append(f"process {p.pid}: {cmd[:200]}")
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs([p for p, _ in procs], timeout=5)
        ids = [i for i in self.ids if len(i) >= 12]
        for _ in range(3):
            points = mounts_where(lambda m: m.startswith(str(self.work) + "/") or any(i in m for i in ids))
            for point in points:
                forced.append(f"mount {point}")
                if quiet(["umount", point], 10) != 0:
                    quiet(["umount", "-l", point], 10)
            if not points:
                break
        for ns in sorted(self.netns):
            if os.path.exists(ns):
                forced.append(f"network namespace {ns}")
                remove_netns(ns)
        for path in self.kata_paths(ids):  # the runtime's, outside our work dir
            if not mounts_under(str(path)):
                forced.append(str(path))
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    remove_netns(str(path))
        if self.bridge_made and Path(f"/sys/class/net/{self.bridge}").exists():
            quiet(["ip", "link", "del", self.bridge], 30)
        for rule in self.iptables:
            quiet(["iptables", "-D", *rule], 30)
        forced += [f"cgroup {top}: not empty" for top in remove_cgroup_parent(self.work.name)]
        if not mounts_where(lambda m: m.startswith(str(self.work))):
            shutil.rmtree(self.work, ignore_errors=True)
        # what is left now is a failure of the clean-up itself
        still = rep["still_left"]
        still += [f"process {p.pid}: {c[:200]}" for p, c in self.ours()]
        still += [f"mount {m}" for m in mounts_where(lambda m: m.startswith(str(self.work)) or
                                                      any(i in m for i in ids))]
        still += [f"network namespace {ns}" for ns in sorted(self.netns) if os.path.exists(ns)]
        if Path(f"/sys/class/net/{self.bridge}").exists():
            still.append(f"bridge {self.bridge}")
        still += [str(p) for p in self.kata_paths(ids)]
        if self.work.exists():
            still.append(f"{self.work} not removed")
        return rep


# ------------------------------------------------------------------------------------------ measuring

def measure(args: argparse.Namespace, h: Harness, res: dict[str, Any]) -> None:
    say(f"work dir {h.work}; load {res['load_start']}; K in {args.sizes}, {args.repeat} repetition(s), "
        f"{args.idle:g} s idle; {'VM template' if args.template else 'cold boots (no template)'}")
    h.setup(res)
    plan = [(f"w{i}", k, "warmup") for i in range(args.warmup) for k in (1,)]
    plan += [(str(i), k, "pods") for i in range(args.repeat) for k in args.sizes]
    for tag, k, group in plan:
        for handler in args.handlers:  # interleaved, so that load drifts hit both alike
            r = h.run_pod(handler, k, tag, args.idle, measure_memory=group == "pods")
            res[group].append(r)
            what = "warm-up" if group == "warmup" else f"{int(tag) + 1}/{args.repeat}"
            if r["ok"]:
                mem = f", {r['memory']['total'] / MB:.1f} MB PSS" if "memory" in r else ""
                say(f"{what} {handler} K={k}: RunPodSandbox {fmt_s(r['run_pod'])}, last container running "
                    f"{fmt_s(r['to_last_running'])}{mem}; stop+remove {fmt_s(r.get('stop', 0) + r.get('remove', 0))}")
            else:
                say(f"{what} {handler} K={k} FAILED: {r.get('error')}")
                for line in r.get("containerd_errors") or []:
                    say(f"  containerd: {line}")


# ------------------------------------------------------------------------------------------- reporting

def _per_extra(a: float | None, b: float | None, k: int) -> float | None:
    return None if a is None or b is None or k <= 1 else (a - b) / (k - 1)


def _calls(per_pod: Any, per: int = 1) -> str:
    """``create 1.90 s, start ×2 0.80 s``: each subcommand's calls (count and time per ``per``, medians
    over the pods)."""
    walls: dict[str, list[float]] = {}
    counts: dict[str, list[float]] = {}
    for calls in per_pod:
        mine: dict[str, list[float]] = {}
        for c in calls:
            if isinstance(c, dict):
                mine.setdefault(c["sub"], []).append(c["wall"])
        for sub, w in mine.items():
            walls.setdefault(sub, []).append(sum(w) / max(per, 1))
            counts.setdefault(sub, []).append(len(w) / max(per, 1))
    return ", ".join(f"{sub}{'' if median(counts[sub]) == 1 else f' ×{median(counts[sub]):g}'} "
                     f"{fmt_s(median(w))}" for sub, w in walls.items())


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for handler in res.get("handlers", HANDLERS):
        per: dict[int, dict[str, Any]] = {}
        for k in res["sizes"]:
            rows = [r for r in res["pods"] if r["handler"] == handler and r["k"] == k]
            ok = [r for r in rows if r["ok"]]
            mem = [r["memory"] for r in ok if "memory" in r]
            per[k] = {
                "n": len(ok), "of": len(rows),
                "run_pod": median(r["run_pod"] for r in ok), "first": median(r["first"] for r in ok),
                "extra": median(r["extra_mean"] for r in ok),
                "total": median(r["to_last_running"] for r in ok),
                "total_min": minimum(r["to_last_running"] for r in ok),
                "stop_remove": median(r.get("stop", 0) + r.get("remove", 0) for r in ok),
                "roles": {role: median(m["roles"][role] for m in mem) for role in ROLES},
                "counts": {role: median(m["counts"][role] for m in mem) for role in ROLES},
                "pss": median(m["total"] for m in mem),
                "in_runtime_run_pod": median((r.get("in_runtime") or {}).get("run_pod") for r in ok),
                "in_runtime_extra": median(r.get("in_runtime_extra") for r in ok),
                "calls_run_pod": _calls(r.get("runtime_calls", {}).get("run_pod", []) for r in ok),
                "calls_extra": _calls((r.get("calls_extra", []) for r in ok), k - 1),
            }
        base = per.get(1, {})
        for k, st in per.items():
            st["pss_per_extra"] = _per_extra(st["pss"], base.get("pss"), k)
            st["total_per_extra"] = _per_extra(st["total"], base.get("total"), k)
            st["roles_per_extra"] = {role: _per_extra(v, (base.get("roles") or {}).get(role), k)
                                     for role, v in st["roles"].items()}
        s[handler] = per
    return s


def failures(res: dict[str, Any]) -> list[str]:
    out = [f"{r['handler']} K={r['k']} #{r['tag']}: {r.get('error')}" for g in ("warmup", "pods")
           for r in res.get(g, []) if not r["ok"]]
    if res.get("error"):
        out.append(res["error"])
    return out


def _mb(v: float | None, sign: bool = False) -> str:
    return "-" if v is None else f"{'+' if sign and v >= 0 else ''}{v / MB:.1f} MB"


def _verdict(v: float | None, goal: float, unit: str) -> str:
    if v is None:
        return "-"
    return "met" if v <= goal else f"missed by {v - goal:.2f} {unit}"


def render_markdown(res: dict[str, Any]) -> str:
    s = res["summary"]
    f = res.get("host", {})
    fi = res.get("factory_init") or {}
    kconf = (f"pods from a VM template (`factory init` {fmt_s(fi.get('wall'))})" if res.get("template")
             else "cold boots (--no-template)") if "kata" in res.get("handlers", HANDLERS) else "not run"
    lines = [
        f"Host: {f.get('cpu', '?')}, {f.get('cores')} cores, {f.get('mem_total_gib')} GiB; QEMU "
        f"{f.get('qemu_version', '?')}, machine {f.get('machine', '?')}, guest {f.get('vcpus')} vCPU / "
        f"{f.get('guest_mem_mib')} MiB; containerd {res.get('containerd_version', '?')} (CRI; kata: "
        f"containerd-shim v1 + kata-runtime, {kconf}; runc: containerd-shim-runc-v2), runc "
        f"{f.get('runc_version', '?')}. Load average (1/5/15 min) {'/'.join(map(str, res['load_start']))} at start, "
        f"{'/'.join(map(str, res.get('load_end', [])))} at end. "
        f"{res.get('finished', res['started'])[:16].replace('T', ' ')} UTC, {res['repeat']} repetition(s), "
        f"interleaved {'/'.join(res.get('handlers', HANDLERS))}, after {res.get('warmup_n', 0)} uncounted "
        f"warm-up pod(s) of each; pods of busybox `{' '.join(WORKLOAD)}` containers, measured after "
        f"{res['idle']:g} s idle.",
        "",
        "| start over CRI (medians; wall) | containers | pods ok | RunPodSandbox | first container "
        "(Create + Start) | each extra container (Create + Start, mean) | RunPodSandbox → last container "
        "running (min) | Stop + Remove |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for handler in s:
        for k, st in s[handler].items():
            goal = (f" (goal ≤ {GOAL_EXTRA_START_S:g} s: {_verdict(st['extra'], GOAL_EXTRA_START_S, 's')})"
                    if handler == "kata" and k > 1 else "")
            lines.append(f"| {handler} | {k} | {st['n']}/{st['of']} | {fmt_s(st['run_pod'])} | {fmt_s(st['first'])} "
                         f"| {fmt_s(st['extra']) if k > 1 else ''}{goal} | {fmt_s(st['total'])} "
                         f"({fmt_s(st['total_min'])}) | {fmt_s(st['stop_remove'])} |")
    kata = s.get("kata") or {}
    if any(st.get("in_runtime_run_pod") is not None for st in kata.values()):
        lines += ["", "| kata: of that, inside kata-runtime calls (trace wrapper; medians) | containers | "
                  "RunPodSandbox | each extra container (Create + Start) |", "| --- | ---: | ---: | ---: |"]
        for k, st in kata.items():
            extra = (f"{fmt_s(st['in_runtime_extra'])} of {fmt_s(st['extra'])} ({st['calls_extra']})"
                     if k > 1 else "")
            lines.append(f"| kata | {k} | {fmt_s(st['in_runtime_run_pod'])} of {fmt_s(st['run_pod'])} "
                         f"({st['calls_run_pod']}) | {extra} |")
    roles = [r for r in ROLES if any((st["counts"].get(r) or 0) for h in s for st in s[h].values())]
    lines += ["", "| host PSS of the pod (medians; MB = 10^6 B) | containers | "
              + " | ".join(ROLES[r] for r in roles) + " | total | per extra container (vs 1 container) |",
              "| --- | ---: | " + "---: | " * len(roles) + "---: | ---: |"]
    for handler in s:
        for k, st in s[handler].items():
            cells = []
            for r in roles:
                n = st["counts"].get(r)
                cells.append(f"{_mb(st['roles'][r])}{f' ×{n:g}' if n and n != 1 else ''}" if n else "")
            pe = None if st["pss_per_extra"] is None else st["pss_per_extra"] / MB
            goal = (f" (goal ≤ {GOAL_EXTRA_PSS_MB:g} MB: {_verdict(pe, GOAL_EXTRA_PSS_MB, 'MB')})"
                    if handler == "kata" and k > 1 else "")
            lines.append(f"| {handler} | {k} | " + " | ".join(cells) + f" | {_mb(st['pss'])} | "
                         f"{_mb(st['pss_per_extra'], True) if k > 1 else ''}{goal} |")
    kmax = max(res["sizes"])
    if kmax > 1:
        lines.append("")
        for handler in s:
            st = s[handler].get(kmax) or {}
            if not st.get("n"):
                continue
            parts = ", ".join(f"{ROLES[r]} {_mb(v, True)}" for r, v in (st.get("roles_per_extra") or {}).items()
                              if v is not None and r in roles and abs(v) >= 0.05 * MB)
            g = ""
            if handler == "kata":
                pe = None if st.get("pss_per_extra") is None else st["pss_per_extra"] / MB
                g = (f" (goals ≤ {GOAL_EXTRA_PSS_MB:g} MB: {_verdict(pe, GOAL_EXTRA_PSS_MB, 'MB')}; "
                     f"≤ {GOAL_EXTRA_START_S:g} s: {_verdict(st.get('extra'), GOAL_EXTRA_START_S, 's')})")
            lines.append(f"- {handler}, each extra container (K={kmax} vs 1): {_mb(st.get('pss_per_extra'), True)} "
                         f"host PSS{f' ({parts})' if parts else ''}, {fmt_s(st.get('extra'))} to create and start "
                         f"(RunPodSandbox → last running grows by {fmt_s(st.get('total_per_extra'))} a container){g}.")
    c = res.get("cleanup") or {}
    if c:
        forced, still = c.get("forced") or [], c.get("still_left") or []
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
    ap.add_argument("--short", action="store_true", help="pods of 1 and 2 containers, 1 repetition (CI)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions of each pod (default 3; 1 with --short)")
    ap.add_argument("--json", type=Path, help="write all raw numbers here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    ap.add_argument("--runtime", default="", help="kata-runtime (default /opt/kata-dev/bin/kata-runtime, else PATH)")
    ap.add_argument("--template", action=argparse.BooleanOptionalAction, default=True,
                    help="kata pods clone a VM template (default); --no-template: cold boots")
    ap.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True,
                    help="containerd runs kata-runtime through a wrapper that logs each call's times (default)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted 1-container pods of each handler first (1)")
    ap.add_argument("--idle", type=float, default=None, help="seconds a pod settles before its memory is read "
                    "(5; 3 with --short)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one CRI call may take (180)")
    ap.add_argument("--handlers", default=",".join(HANDLERS), help="comma-separated (default kata,runc; for "
                    "development, e.g. runc alone)")
    ap.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: print the tables of an "
                    "earlier run's --json file")
    args = ap.parse_args(argv)
    args.sizes = [1, 2] if args.short else [1, 2, 4]
    args.handlers = [x for x in args.handlers.split(",") if x]
    if not args.handlers or set(args.handlers) - set(HANDLERS):
        ap.error(f"--handlers: of {', '.join(HANDLERS)}")
    if args.repeat is None:
        args.repeat = 1 if args.short else 3
    if args.idle is None:
        args.idle = 3.0 if args.short else 5.0
    args.runtime = args.runtime or default_runtime()
    args.runtime = os.path.abspath(shutil.which(args.runtime) or args.runtime)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render_saved(args.render, args.markdown, summarize, render_markdown)
    refused = needs_root("pods.py", "containerd, CNI, QEMU's mounts, runc",
                         (CONTAINERD, CTR, "containerd-shim", "containerd-shim-runc-v2", RUNC, args.runtime,
                          f"{CNI_BIN}/bridge", "/bin/busybox"))
    if refused is not None:
        return refused
    unwind_on_signals()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kata-bench-pods.", dir="/tmp"))
    work.chmod(0o711)
    h = Harness(work, args.runtime, args.template, args.timeout, args.trace)
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeat": args.repeat, "short": args.short,
        "sizes": args.sizes, "handlers": args.handlers, "idle": args.idle, "template": args.template,
        "runtime": args.runtime, "warmup_n": args.warmup, "work": str(work), "load_start": loadavg(),
        "host": host_facts(args.runtime),
        "memory_unit": "bytes (tables: MB = 10^6 bytes)", "warmup": [], "pods": []}
    try:
        words = subprocess.run([CONTAINERD, "--version"], capture_output=True, text=True, timeout=10).stdout.split()
        res["containerd_version"] = words[2] if len(words) > 2 else "?"
    except (OSError, subprocess.TimeoutExpired):
        pass

    def cleanup() -> None:
        if res.get("error") and not res.get("interrupted"):
            res["containerd_errors"] = h.log_errors()
        report_cleanup(res, h.cleanup(), say)

    status = guarded(lambda: measure(args, h, res), res, say, cleanup)
    res["load_end"] = loadavg()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["seconds"] = round(time.monotonic() - t_start, 1)
    res["summary"] = summarize(res)
    write_results(res, render_markdown(res), args.markdown, args.json)
    say(f"done in {res['seconds']:.0f} s")
    if status == 0 and (failures(res) or res["cleanup"]["forced"] or res["cleanup"]["still_left"]):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
