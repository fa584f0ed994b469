"""A private containerd with its CRI plugin, driven over CRI as kubelet would.

One containerd for the session (private root, state, sockets, CNI configuration and bridge, all under
one temporary directory), with two runtime handlers: ``runc`` (io.containerd.runc.v2) and ``kata``
(containerd's v1 path: containerd-shim + ``kata-runtime`` as runtime_engine; no options table, which
would silently override runtime_engine). kata-runtime reads ``$KATA_CONF_FILE``: a copy of the
installed configuration with VM templates on; the template VM is made (``factory init``) only when a
kata test runs.

Tests take ``handler`` (``runc``, and ``kata`` marked ``kata``: ``-m 'not kata'`` runs no VM) and a
``kubelet`` that makes pods and containers and removes what is left of them after the test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.cri.cri import CRI, CRIError
from tests.cri.images import PAUSE_CMD, write_oci_archive

KATA = str(Path(sys.executable).with_name("kata-runtime"))
if not os.path.exists(KATA):
    KATA = "/opt/kata-dev/bin/kata-runtime"
CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
INSTALLED_CONFIG = Path("/usr/share/defaults/kata-containers/configuration.toml")
CNI_BIN = "/usr/lib/cni"
NAMESPACE = "k8s.io"

PAUSE_IMAGE = "localhost/kcri/pause:1"
BUSYBOX_IMAGE = "localhost/kcri/busybox:1"

HANDLERS = ["runc", pytest.param("kata", marks=pytest.mark.kata)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kata: runs pods in Kata VMs (handler kata); -m 'not kata' to skip")


# ------------------------------------------------------------------------------------------ helpers

def _run(*argv: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def _free_subnet() -> int:
    """N of a 10.215.N.0/24 that no interface or route of this host uses (docker's pools in our
    bats tests are 10.214.0.0/16, their bridges 10.213.N.0/24)."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show", "table", "all").stdout
    for n in range(10, 250):
        if not re.search(rf"\b10\.215\.{n}\.", used):
            return n
    raise RuntimeError("no free 10.215.N.0/24")


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or under ``prefix``, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()[4].replace("\\040", " ")
            if p == prefix or p.startswith(prefix.rstrip("/") + "/"):
                points.append(p)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def kata_config(dst: Path, template_path: Path) -> Path:
    """The installed configuration.toml with ``[factory] enable_template = true`` and our template path."""
    out: list[str] = []
    section = ""
    keys = ["enable_template = true", f'template_path = "{template_path}"']
    done = False
    for line in INSTALLED_CONFIG.read_text().splitlines():
        m = re.match(r"\s*\[([^\]]+)\]", line)
        if m:
            if section == "factory" and not done:
                out += keys
                done = True
            section = m.group(1).strip()
        if section == "factory" and re.match(r"\s*(enable_template|template_path)\s*=", line):
            continue
        out.append(line)
    if section == "factory" and not done:
        out += keys
        done = True
    if not done:
        out += ["", "[factory]", *keys]
    dst.write_text("\n".join(out) + "\n")
    return dst


# --------------------------------------------------------------------------------------- containerd

@dataclasses.dataclass
class Containerd:
    """The session's containerd, its CRI client and what it owns on the host."""

    dir: Path
    bridge: str
    subnet: str  # 10.215.N.0/24
    gateway: str  # 10.215.N.1
    kata_conf: Path
    proc: subprocess.Popen[bytes] | None = None
    cri: CRI | None = None
    netns: set[str] = dataclasses.field(default_factory=set)  # pod network namespaces seen
    ids: set[str] = dataclasses.field(default_factory=set)  # every pod and container id we made
    kata_template: bool = False

    @property
    def sock(self) -> str:
        return str(self.dir / "containerd.sock")

    @property
    def log(self) -> Path:
        return self.dir / "containerd.log"

    @property
    def kata_root(self) -> Path:
        """kata-runtime's --root for our pods (containerd-shim adds the namespace)."""
        return self.dir / "kata-root" / NAMESPACE

    @property
    def runc_root(self) -> Path:
        return self.dir / "runc-root" / NAMESPACE

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KATA_CONF_FILE"] = str(self.kata_conf)
        env["PATH"] = f"{Path(KATA).parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        return env

    def write_config(self) -> Path:
        d = self.dir
        for sub in ("root", "state", "opt", "cni", "kata-root", "runc-root", "logs"):
            (d / sub).mkdir(exist_ok=True)
        conflist = {
            "cniVersion": "0.4.0", "name": self.bridge,
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(d / "cni-ipam")}},
                {"type": "loopback"},
            ],
        }
        (d / "cni" / "10-kcri.conflist").write_text(json.dumps(conflist, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        conf = f"""version = 2
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
  stream_idle_timeout = "4h0m0s"
  max_container_log_line_size = 16384

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
  runtime_engine = "{KATA}"
  runtime_root = "{d}/kata-root"

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{d}/cni"
  max_conf_num = 1
"""
        path = d / "containerd.toml"
        path.write_text(conf)
        return path

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self) -> None:
        assert self.proc is None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CONTAINERD, "--config", str(self.dir / "containerd.toml")], cwd="/",
                                         env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        if self.cri is None:  # one client for the session: its channel reconnects after a restart
            self.cri = CRI(self.sock, binary=CONTAINERD)
        deadline = time.monotonic() + 60
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                st = self.cri.status()
                conds = {c.type: c.status for c in st.status.conditions}
                if conds.get("RuntimeReady") and conds.get("NetworkReady"):
                    return
                last = RuntimeError(f"CRI not ready: {st.status}")
            except CRIError as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"containerd's CRI does not answer: {last}\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """TERM, then KILL after ``timeout``."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self.cri is not None:
            self.cri.close()
            self.cri = None

    def ctr(self, *args: str, timeout: float = 120) -> str:
        return _run(CTR, "--address", self.sock, "-n", NAMESPACE, *args, timeout=timeout).stdout

    # what our shims and runtimes left, for clean-up after a failure ----------------------------

    def our_shims(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["cmdline", "name"]):
            try:
                cmd = p.info["cmdline"] or []
            except psutil.Error:
                continue
            if cmd and os.path.basename(cmd[0]).startswith("containerd-shim") and \
                    any(str(self.dir) in a for a in cmd):
                out.append(p)
        return out


def _iptables_guard(bridge: str, state: Path) -> None:
    """The host forwards: drop what the pods' default route via the bridge would send off the
    machine (and what would come in for them), as our bats engines do."""
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0" or not shutil.which("iptables"):
        return
    rules = [["FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "DROP"],
             ["FORWARD", "-o", bridge, "!", "-i", bridge, "-j", "DROP"]]
    for r in rules:
        if _run("iptables", "-I", *r, check=False).returncode == 0:
            with open(state, "a") as f:
                f.write(json.dumps(r) + "\n")


def _iptables_unguard(state: Path) -> None:
    if not state.exists():
        return
    for line in state.read_text().splitlines():
        _run("iptables", "-D", *json.loads(line), check=False)
    state.unlink()


def remove_netns(path: str) -> None:
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return
    subprocess.run(["umount", "-l", str(p)], capture_output=True)
    try:
        p.unlink()
    except OSError:
        pass


def remove_everything(cd: Containerd) -> list[str]:
    """Every path of tear-down: pods through CRI, containerd, leftover tasks and shims, mounts,
    network namespaces, bridge, iptables rules, template, temporary directory. What could not be
    removed comes back as a list of complaints."""
    problems: list[str] = []
    if cd.cri is not None and cd.proc is not None and cd.proc.poll() is None:
        try:
            for pod in cd.cri.list_pod_sandbox():
                try:
                    st = cd.cri.pod_sandbox_status(pod.id, verbose=True)
                    cd.netns.update(pod_netns(st))
                    cd.cri.stop_pod_sandbox(pod.id, timeout=120)
                    cd.cri.remove_pod_sandbox(pod.id, timeout=120)
                except CRIError as e:
                    problems.append(f"removing pod {pod.metadata.name}: {e}")
        except CRIError as e:
            problems.append(f"ListPodSandbox: {e}")
    cd.close()
    # containers that survived: kill them through their runtime, then their shims
    for root, runtime in ((cd.runc_root, RUNC), (cd.kata_root, KATA)):
        if not root.exists():
            continue
        p = subprocess.run([runtime, "--root", str(root), "list", "--quiet"], capture_output=True, text=True,
                           env=cd.env(), timeout=120)
        for cid in p.stdout.split():
            problems.append(f"{runtime} container left: {cid}")
            subprocess.run([runtime, "--root", str(root), "kill", "--all", cid, "9"], capture_output=True,
                           env=cd.env(), timeout=60)
            subprocess.run([runtime, "--root", str(root), "delete", "--force", cid], capture_output=True,
                           env=cd.env(), timeout=120)
    for shim in cd.our_shims():
        problems.append(f"shim left: {shim.pid} {' '.join(shim.info['cmdline'])[:200]}")
        try:
            shim.kill()
            shim.wait(10)
        except psutil.Error:
            pass
    if cd.kata_template:
        subprocess.run([KATA, "factory", "destroy"], capture_output=True, env=cd.env(), timeout=120)
    for point in mounts_under(str(cd.dir)):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    for ns in sorted(cd.netns):
        if Path(ns).exists():
            problems.append(f"network namespace left: {ns}")
            remove_netns(ns)
    if Path(f"/sys/class/net/{cd.bridge}").exists():
        subprocess.run(["ip", "link", "del", cd.bridge], capture_output=True)
    _iptables_unguard(cd.dir / "iptables")
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        base = ctrl / cd.dir.name
        if base.is_dir():
            for sub in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                base.rmdir()
            except OSError as e:
                problems.append(f"cgroup {base}: {e}")
    shutil.rmtree(cd.dir, ignore_errors=True)
    if cd.dir.exists():
        problems.append(f"could not remove {cd.dir}")
    return problems


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


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    d = Path(tempfile.mkdtemp(prefix="kcri.", dir="/tmp"))
    n = _free_subnet()
    bridge = "kcri-" + d.name.split(".", 1)[1][:8]
    cd = Containerd(d, bridge, f"10.215.{n}.0/24", f"10.215.{n}.1",
                    kata_config(d / "configuration.toml", d / "template"))
    try:
        # the bridge is ours from the start (the CNI bridge plugin adopts it): the host end for the
        # pod-to-host test, and nothing else answers on it
        _run("ip", "link", "add", bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{cd.gateway}/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        _iptables_guard(bridge, d / "iptables")
        cd.write_config()
        cd.start()
        archive = write_oci_archive(d / "images.tar", {
            PAUSE_IMAGE: {"Entrypoint": PAUSE_CMD},
            BUSYBOX_IMAGE: {"Cmd": ["/bin/sh"]},
        })
        cd.ctr("images", "import", "--all-platforms", str(archive))
        archive.unlink()
        assert cd.cri is not None
        for image in (PAUSE_IMAGE, BUSYBOX_IMAGE):
            assert cd.cri.image_status(image).id, f"{image} not seen by the CRI after import"
    except BaseException:
        problems = remove_everything(cd)
        if problems:
            print("clean-up after a failed start:\n" + "\n".join(problems), file=sys.stderr)
        raise
    _SESSION.append(cd)
    yield cd
    problems = remove_everything(cd)
    assert not problems, "containerd CRI session tear-down:\n" + "\n".join(problems)


_SESSION: list[Containerd] = []


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_at_end() -> Iterator[None]:
    """Overrides the session check of tests/conftest.py for this folder: the same check (QEMU, proxy,
    shim, mounts under /run/kata-containers and /run/vc, kata netns and sockets), narrowed to what
    names one of our pods or containers or our temporary directory. Unfiltered, it also counts the
    VMs of whoever else runs kata tests on this machine at the same time."""
    yield
    left: list[str] = []
    for cd in _SESSION:
        for marker in sorted(cd.ids) + [str(cd.dir)]:
            left += our_leftovers(marker)
        for i in sorted(cd.ids):
            left += [f"file: {p}" for p in sandbox_leftovers(cd.kata_root, i)]
    assert not left, "left behind after the tests:\n" + "\n".join(sorted(set(left)))


@pytest.fixture(scope="session")
def cri(containerd: Containerd) -> CRI:
    assert containerd.cri is not None
    return containerd.cri


@pytest.fixture(scope="session")
def kata_template(containerd: Containerd) -> None:
    """The VM template for kata pods (once, and only when a kata test runs)."""
    p = subprocess.run([KATA, "factory", "init"], capture_output=True, text=True, env=containerd.env(),
                       timeout=300, stdin=subprocess.DEVNULL)
    containerd.kata_template = True
    if p.returncode != 0:
        print(f"kata-runtime factory init failed ({p.returncode}), pods boot cold: {p.stderr.strip()}",
              file=sys.stderr)


@pytest.fixture(scope="session", params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    """The CRI runtime handler under test."""
    if request.param == "kata":
        request.getfixturevalue("kata_template")
    return str(request.param)


# ------------------------------------------------------------------------------------------ kubelet

@dataclasses.dataclass
class Pod:
    id: str
    name: str
    handler: str
    config: dict[str, Any]
    ip: str = ""
    netns: set[str] = dataclasses.field(default_factory=set)

    @property
    def log_directory(self) -> Path:
        return Path(self.config["log_directory"])


class Kubelet:
    """Makes pods and containers the way kubelet does (its configs, its log layout), remembers
    them, and removes what is left of them."""

    def __init__(self, cd: Containerd) -> None:
        self.cd = cd
        self.pods: list[Pod] = []

    @property
    def cri(self) -> CRI:
        assert self.cd.cri is not None
        return self.cd.cri

    def pod_config(self, name: str, **extra: Any) -> dict[str, Any]:
        uid = str(uuid.uuid4())
        logdir = self.cd.dir / "logs" / f"kcri_{name}_{uid}"
        logdir.mkdir(parents=True)
        config = {
            "metadata": {"name": name, "uid": uid, "namespace": "kcri", "attempt": 0},
            "hostname": name,
            "log_directory": str(logdir),
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "kcri",
                       "io.kubernetes.pod.uid": uid, "kcri": "1"},
            "annotations": {"kubernetes.io/config.source": "api"},
            "linux": {
                "cgroup_parent": f"/{self.cd.dir.name}/pod{uid}",
                "security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}},
            },
        }
        config.update(extra)
        return config

    def run_pod(self, name: str, handler: str, timeout: float = 300, **extra: Any) -> Pod:
        config = self.pod_config(name, **extra)
        pid = self.cri.run_pod_sandbox(config, handler, timeout=timeout)
        self.cd.ids.add(pid)
        pod = Pod(pid, name, handler, config)
        self.pods.append(pod)
        st = self.cri.pod_sandbox_status(pid, verbose=True)
        pod.ip = st.status.network.ip
        pod.netns = pod_netns(st)
        self.cd.netns.update(pod.netns)
        return pod

    def container_config(self, pod: Pod, name: str, command: list[str], **extra: Any) -> dict[str, Any]:
        config = {
            "metadata": {"name": name, "attempt": 0},
            "image": {"image": BUSYBOX_IMAGE},
            "command": command,
            "working_dir": "/",
            "envs": [{"key": "KCRI_CONTAINER", "value": name}],
            "labels": {"io.kubernetes.container.name": name, "io.kubernetes.pod.name": pod.name,
                       "io.kubernetes.pod.namespace": "kcri", "io.kubernetes.pod.uid": pod.config["metadata"]["uid"]},
            "annotations": {"io.kubernetes.container.terminationMessagePath": "/dev/termination-log"},
            "log_path": f"{name}/0.log",
            "linux": {
                "resources": {"cpu_shares": 2, "oom_score_adj": 1000},
                "security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}},
            },
        }
        config.update(extra)
        return config

    def create_container(self, pod: Pod, name: str, command: list[str], start: bool = True,
                         timeout: float = 300, **extra: Any) -> str:
        cid = self.cri.create_container(pod.id, self.container_config(pod, name, command, **extra), pod.config,
                                        timeout=timeout)
        self.cd.ids.add(cid)
        if start:
            self.cri.start_container(cid, timeout=timeout)
        return cid

    def remove_pod(self, pod: Pod) -> None:
        """StopPodSandbox and RemovePodSandbox, as kubelet does when a pod goes."""
        self.cri.stop_pod_sandbox(pod.id, timeout=300)
        self.cri.remove_pod_sandbox(pod.id, timeout=300)
        self.pods.remove(pod)

    def cleanup(self) -> list[str]:
        problems = []
        for pod in list(self.pods):
            try:
                self.remove_pod(pod)
            except CRIError as e:
                problems.append(f"pod {pod.name}: {e}")
        return problems

    def leftovers(self, pod: Pod, containers: Sequence[str] = ()) -> list[str]:
        """What of ``pod`` (and its ``containers``) is left on the host after it was removed."""
        left = [f"network namespace {ns}" for ns in pod.netns if Path(ns).exists()]
        for i in [pod.id, *containers]:
            left += [f"mount {m}" for m in mounts_under(str(self.cd.dir)) if i in m]
            for p in psutil.process_iter(["cmdline"]):
                try:
                    cmd = " ".join(p.info["cmdline"] or [])
                except psutil.Error:
                    continue
                if i in cmd and p.pid != os.getpid():
                    left.append(f"process {p.pid}: {cmd[:200]}")
        if pod.handler == "kata":
            for i in [pod.id, *containers]:
                left += our_leftovers(i)
            left += sandbox_leftovers(self.cd.kata_root, pod.id)
        if self.cd.runc_root.exists():
            left += [f"runc state {p}" for p in self.cd.runc_root.iterdir() if p.name in (pod.id, *containers)]
        if self.cd.kata_root.exists():
            left += [f"kata state {p}" for p in self.cd.kata_root.iterdir() if p.name in (pod.id, *containers)]
        return sorted(set(left))


@pytest.fixture
def kubelet(containerd: Containerd) -> Iterator[Kubelet]:
    """Pods and containers of one test; what the test left is removed after it."""
    k = Kubelet(containerd)
    yield k
    problems = k.cleanup()
    assert not problems, "removing the test's pods:\n" + "\n".join(problems)


@pytest.fixture(scope="class")
def class_kubelet(containerd: Containerd) -> Iterator[Kubelet]:
    """The same for a class whose tests walk one pod through its life."""
    k = Kubelet(containerd)
    yield k
    problems = k.cleanup()
    assert not problems, "removing the class's pods:\n" + "\n".join(problems)
