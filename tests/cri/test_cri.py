"""containerd's CRI driven as kubelet drives a pod, with runtime handler ``runc`` and ``kata``.

With ``kata`` a pod is one VM: its sandbox (pause) container boots it and every container of the
pod joins it (annotations ``io.kubernetes.cri.container-type`` / ``io.kubernetes.cri.sandbox-id``).
Run ``-m 'not kata'`` for runc only (no VM). At most one kata pod exists at a time (2 cores): the
pod-to-pod test pairs a pod of the handler under test with a runc pod.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.cri.conftest import BUSYBOX_IMAGE, PAUSE_IMAGE, Containerd, Kubelet, Pod
from tests.cri.cri import CRI, CRIError, stream

HOST_BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
BOOT_ID = ["cat", "/proc/sys/kernel/random/boot_id"]
SLEEPER = ["sh", "-c", "echo hello-stdout; echo hello-stderr >&2; exec sleep 100000"]
# prints (to its stdout, hence its log and an attached client) whatever a test writes to /tmp/say
SAYER = ["sh", "-c", "echo sayer-started; while :; do if [ -f /tmp/say ]; then cat /tmp/say; rm -f /tmp/say; fi; "
                     "sleep 0.2; done"]
LOG_LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) (.*)$")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (CRIError, OSError, AssertionError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout}s (last: {last!r})")


def cri_log(path: Path) -> list[tuple[str, str, str, str]]:
    """The CRI log at ``path`` as (time, stream, tag, text); asserts the format of every line."""
    out = []
    for line in path.read_text().splitlines():
        m = LOG_LINE.match(line)
        assert m, f"not a CRI log line in {path}: {line!r}"
        datetime.fromisoformat(m.group(1)[:26].rstrip("Z"))  # RFC 3339 with nanoseconds, UTC
        assert m.group(1).endswith("Z")
        out.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return out


def boot_id(cri: CRI, cid: str) -> str:
    r = cri.exec_sync(cid, BOOT_ID, timeout=60)
    assert r.exit_code == 0, r
    return r.out.strip()


def assert_boot_ids(handler: str, ids: list[str]) -> None:
    """One kernel per pod: runc's is the host's, kata's is the pod VM's."""
    assert len(set(ids)) == 1, f"containers of one pod run on different kernels: {ids}"
    if handler == "kata":
        assert ids[0] != HOST_BOOT_ID, "a kata container runs on the host's kernel"
    else:
        assert ids[0] == HOST_BOOT_ID


def qemu_of(ids: list[str]) -> dict[str, list[int]]:
    """The QEMU processes whose command line names each of ``ids``."""
    out: dict[str, list[int]] = {i: [] for i in ids}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if cmd and "qemu-system" in os.path.basename(cmd[0]):
            line = " ".join(cmd)
            for i in ids:
                if i in line:
                    out[i].append(p.pid)
    return out


def assert_one_vm(handler: str, pod: Pod, containers: list[str]) -> None:
    """kata: the pod has one QEMU and no container has one of its own (a boot_id alone cannot tell:
    VMs cloned from one template share it)."""
    if handler != "kata":
        return
    vms = qemu_of([pod.id, *containers])
    assert len(vms[pod.id]) == 1, f"QEMU processes of pod {pod.id}: {vms[pod.id]}"
    assert not any(vms[c] for c in containers), f"containers with a VM of their own: {vms}"


def test_version_and_images(cri: CRI) -> None:
    v = cri.version()
    assert v.runtime_name == "containerd" and v.runtime_api_version == "v1", v
    tags = {t for i in cri.list_images() for t in i.repo_tags}
    assert {PAUSE_IMAGE, BUSYBOX_IMAGE} <= tags
    st = cri.image_status(BUSYBOX_IMAGE)
    assert st.id.startswith("sha256:") and st.size > 0
    assert not cri.image_status("localhost/kcri/absent:0").id


def test_create_container_without_sandbox(containerd: Containerd, kubelet: Kubelet) -> None:
    missing = "0123456789abcdef" * 4
    fake = Pod(missing, "nopod", "runc", kubelet.pod_config("nopod"))
    with pytest.raises(CRIError) as e:
        kubelet.cri.create_container(missing, kubelet.container_config(fake, "orphan", ["true"]), fake.config)
    assert missing in e.value.details and "not found" in e.value.details.lower(), e.value
    assert not [c for c in kubelet.cri.list_containers() if c.metadata.name == "orphan"]


@dataclass
class PodUnderTest:
    kubelet: Kubelet
    pod: Pod
    ids: dict[str, str] = field(default_factory=dict)  # container name -> id

    @property
    def cri(self) -> CRI:
        return self.kubelet.cri


@pytest.fixture(scope="class")
def pod(class_kubelet: Kubelet, handler: str) -> PodUnderTest:
    """A pod of ``handler`` with containers c1 (prints, sleeps) and c2 (SAYER), both started."""
    p = class_kubelet.run_pod(f"pod-{handler}", handler)
    put = PodUnderTest(class_kubelet, p)
    put.ids["c1"] = class_kubelet.create_container(p, "c1", SLEEPER)
    put.ids["c2"] = class_kubelet.create_container(p, "c2", SAYER)
    return put


class TestPodLifecycle:
    """One pod walked through its life, in order (later tests build on earlier ones)."""

    def test_pod_ready_with_cni_address(self, pod: PodUnderTest, containerd: Containerd, handler: str) -> None:
        st = pod.cri.pod_sandbox_status(pod.pod.id).status
        assert pod.cri.enum_name("PodSandboxState", st.state) == "SANDBOX_READY"
        assert st.metadata.name == pod.pod.name and st.runtime_handler == handler
        assert ipaddress.ip_address(st.network.ip) in ipaddress.ip_network(containerd.subnet), st.network
        assert st.network.ip != containerd.gateway
        uid = pod.pod.config["metadata"]["uid"]
        listed = pod.cri.list_pod_sandbox({"label_selector": {"io.kubernetes.pod.uid": uid}})
        assert [s.id for s in listed] == [pod.pod.id]
        assert pod.cri.enum_name("PodSandboxState", listed[0].state) == "SANDBOX_READY"

    def test_containers_running(self, pod: PodUnderTest) -> None:
        listed = pod.cri.list_containers({"pod_sandbox_id": pod.pod.id})
        assert {c.metadata.name: c.id for c in listed} == pod.ids
        for c in listed:
            assert pod.cri.enum_name("ContainerState", c.state) == "CONTAINER_RUNNING", c
            assert c.image.image and c.labels["io.kubernetes.container.name"] == c.metadata.name
        for name, cid in pod.ids.items():
            st = pod.cri.container_status(cid).status
            assert pod.cri.enum_name("ContainerState", st.state) == "CONTAINER_RUNNING"
            assert st.metadata.name == name and st.started_at > 0 and st.finished_at == 0
            assert st.log_path == str(pod.pod.log_directory / name / "0.log")
        running = pod.cri.list_containers({"pod_sandbox_id": pod.pod.id,
                                           "state": {"state": pod.cri.enum("ContainerState", "CONTAINER_RUNNING")}})
        assert len(running) == 2

    def test_exec_sync(self, pod: PodUnderTest) -> None:
        r = pod.cri.exec_sync(pod.ids["c1"], ["sh", "-c", "echo out; echo err >&2; echo $KCRI_CONTAINER; exit 7"],
                              timeout=60)
        assert (r.exit_code, r.out, r.err) == (7, "out\nc1\n", "err\n")
        r = pod.cri.exec_sync(pod.ids["c2"], ["hostname"], timeout=60)
        assert (r.exit_code, r.out) == (0, pod.pod.name + "\n")

    def test_exec_sync_timeout(self, pod: PodUnderTest) -> None:
        t0 = time.monotonic()
        with pytest.raises(CRIError) as e:
            pod.cri.exec_sync(pod.ids["c1"], ["sleep", "41"], timeout=2)
        took = time.monotonic() - t0
        assert "timeout" in e.value.details.lower() or e.value.code.name == "DEADLINE_EXCEEDED", e.value
        assert 2 <= took < 20, took
        # the command is killed, the container goes on
        wait_for("the timed-out exec killed",
                 lambda: "sleep 41" not in pod.cri.exec_sync(pod.ids["c1"], ["ps", "-o", "args"], timeout=30).out,
                 timeout=15)

    def test_one_kernel_per_pod(self, pod: PodUnderTest, handler: str) -> None:
        assert_boot_ids(handler, [boot_id(pod.cri, cid) for cid in pod.ids.values()])
        assert_one_vm(handler, pod.pod, list(pod.ids.values()))

    def test_logs_at_the_cri_log_path(self, pod: PodUnderTest) -> None:
        path = pod.pod.log_directory / "c1" / "0.log"
        lines = wait_for("c1's two lines in its log", lambda: len(cri_log(path)) >= 2 and cri_log(path))
        assert sorted((s, tag, text) for _, s, tag, text in lines) == \
            [("stderr", "F", "hello-stderr"), ("stdout", "F", "hello-stdout")]

    def test_reopen_container_log(self, pod: PodUnderTest) -> None:
        cid = pod.ids["c2"]
        log = pod.pod.log_directory / "c2" / "0.log"
        wait_for("c2 started", lambda: ("stdout", "sayer-started") in [(s, t) for _, s, _, t in cri_log(log)])
        log.rename(log.with_name("0.log.1"))  # what kubelet's log rotation does
        pod.cri.reopen_container_log(cid)
        assert log.exists()
        assert pod.cri.exec_sync(cid, ["sh", "-c", "echo after-reopen > /tmp/say.tmp && mv /tmp/say.tmp /tmp/say"],
                                 timeout=30).exit_code == 0
        wait_for("a line in the reopened log", lambda: ("stdout", "after-reopen") in
                 [(s, t) for _, s, _, t in cri_log(log)])
        assert "after-reopen" not in log.with_name("0.log.1").read_text()

    def test_stats(self, pod: PodUnderTest) -> None:
        st = pod.cri.container_stats(pod.ids["c1"])
        assert st.attributes.id == pod.ids["c1"] and st.attributes.metadata.name == "c1"
        assert st.HasField("cpu") and st.HasField("memory"), st
        assert st.cpu.timestamp > 0 and st.memory.timestamp > 0, st
        assert st.memory.working_set_bytes.value > 0, st
        listed = pod.cri.list_container_stats({"pod_sandbox_id": pod.pod.id})
        assert {s.attributes.id for s in listed} == set(pod.ids.values())

    def test_update_container_resources(self, pod: PodUnderTest) -> None:
        limit = 200 << 20
        pod.cri.update_container_resources(pod.ids["c1"], {"memory_limit_in_bytes": limit, "cpu_shares": 512,
                                                           "cpu_period": 100000, "cpu_quota": 50000})
        # cgroup v1 (runc here: the container's own memory cgroup is mounted at .../memory) or v2
        # (kata's guest: the container's cgroup is the 0:: line of /proc/self/cgroup)
        r = pod.cri.exec_sync(pod.ids["c1"], ["sh", "-c", "p=$(sed -n 's/^0:://p' /proc/self/cgroup); "
                                              "for f in /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                              "/sys/fs/cgroup$p/memory.max /sys/fs/cgroup/memory.max; do "
                                              '[ -f "$f" ] && { echo "$f"; cat "$f"; exit 0; }; done; exit 1'],
                              timeout=30)
        assert r.exit_code == 0 and r.out.split()[-1] == str(limit), r

    def test_exec_streaming(self, pod: PodUnderTest) -> None:
        url = pod.cri.exec(pod.ids["c1"], ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert url.startswith("http://127.0.0.1:"), url
        r = stream(url, timeout=60)
        assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3), r
        url = pod.cri.exec(pod.ids["c1"], ["head", "-c", "6"], stdin=True, stderr=False)
        r = stream(url, stdin=b"hello\n", timeout=60)
        assert (r.stdout, r.exit_code) == (b"hello\n", 0), r

    def test_attach(self, pod: PodUnderTest) -> None:
        cid = pod.ids["c2"]
        url = pod.cri.attach(cid, stdout=True, stderr=True)

        def say() -> None:
            time.sleep(1.5)
            pod.cri.exec_sync(cid, ["sh", "-c", "echo attached-hello > /tmp/say.tmp && mv /tmp/say.tmp /tmp/say"],
                              timeout=30)

        t = threading.Thread(target=say)
        t.start()
        try:
            r = stream(url, timeout=30, until=b"attached-hello")
        finally:
            t.join()
        assert b"attached-hello" in r.stdout, r

    def test_stop_container_term_then_kill(self, pod: PodUnderTest) -> None:
        k = pod.kubelet
        polite = k.create_container(pod.pod, "polite", ["sh", "-c", 'trap "exit 0" TERM; echo ready; '
                                                                    "while :; do sleep 100 & wait; done"])
        stubborn = k.create_container(pod.pod, "stubborn", ["sh", "-c", 'trap "" TERM; echo ready; '
                                                                        "while :; do sleep 1; done"])
        def ready(name: str) -> bool:
            return "ready" in [t for _, _, _, t in cri_log(pod.pod.log_directory / name / "0.log")]

        for name in ("polite", "stubborn"):
            wait_for(f"{name}'s TERM trap set", functools.partial(ready, name))
        t0 = time.monotonic()
        pod.cri.stop_container(polite, timeout=30)
        took = time.monotonic() - t0
        st = pod.cri.container_status(polite).status
        assert pod.cri.enum_name("ContainerState", st.state) == "CONTAINER_EXITED"
        assert st.exit_code == 0 and took < 15, (st.exit_code, took)
        t0 = time.monotonic()
        pod.cri.stop_container(stubborn, timeout=3)
        took = time.monotonic() - t0
        st = pod.cri.container_status(stubborn).status
        assert pod.cri.enum_name("ContainerState", st.state) == "CONTAINER_EXITED"
        assert st.exit_code == 137 and 3 <= took < 20, (st.exit_code, st.reason, took)
        for cid in (polite, stubborn):
            pod.cri.remove_container(cid)
        assert {c.metadata.name for c in pod.cri.list_containers({"pod_sandbox_id": pod.pod.id})} == {"c1", "c2"}

    def test_remove_one_container_leaves_the_other(self, pod: PodUnderTest) -> None:
        c1 = pod.ids.pop("c1")
        pod.cri.stop_container(c1, timeout=10)
        pod.cri.remove_container(c1)
        with pytest.raises(CRIError):
            pod.cri.container_status(c1)
        assert [c.id for c in pod.cri.list_containers({"pod_sandbox_id": pod.pod.id})] == [pod.ids["c2"]]
        assert pod.cri.container_state(pod.ids["c2"]) == "CONTAINER_RUNNING"
        r = pod.cri.exec_sync(pod.ids["c2"], ["echo", "still-here"], timeout=60)
        assert (r.exit_code, r.out) == (0, "still-here\n")

    def test_a_later_container_joins_the_pod(self, pod: PodUnderTest, handler: str) -> None:
        pod.ids["c3"] = pod.kubelet.create_container(pod.pod, "c3", SLEEPER)
        assert pod.cri.container_state(pod.ids["c3"]) == "CONTAINER_RUNNING"
        assert_boot_ids(handler, [boot_id(pod.cri, pod.ids["c2"]), boot_id(pod.cri, pod.ids["c3"])])
        assert_one_vm(handler, pod.pod, list(pod.ids.values()))
        # same network namespace: c3 reaches a server of c2 on localhost
        pod.cri.exec_sync(pod.ids["c2"], ["sh", "-c", "mkdir -p /tmp/www && echo from-c2 > /tmp/www/index.html && "
                                                      "httpd -p 127.0.0.1:8081 -h /tmp/www"], timeout=30)
        assert wget(pod.cri, pod.ids["c3"], "http://127.0.0.1:8081/") == "from-c2\n"

    def test_stop_and_remove_pod_leaves_nothing(self, pod: PodUnderTest) -> None:
        ids = list(pod.ids.values())
        pod.cri.stop_pod_sandbox(pod.pod.id, timeout=300)
        assert pod.cri.pod_state(pod.pod.id) == "SANDBOX_NOTREADY"
        for cid in ids:
            assert pod.cri.container_state(cid) == "CONTAINER_EXITED"
        pod.cri.remove_pod_sandbox(pod.pod.id, timeout=300)
        pod.kubelet.pods.remove(pod.pod)
        assert not pod.cri.list_pod_sandbox({"id": pod.pod.id})
        assert not pod.cri.list_containers({"pod_sandbox_id": pod.pod.id})
        assert_nothing_left(pod.kubelet, pod.pod, ids)


def assert_nothing_left(kubelet: Kubelet, pod: Pod, containers: list[str]) -> None:
    """Nothing of ``pod`` on the host (processes may take a moment to be reaped)."""
    left: list[str] = []

    def clean() -> bool:
        left[:] = kubelet.leftovers(pod, containers)
        return not left

    try:
        wait_for("nothing left of the pod", clean, timeout=20, interval=0.5)
    except AssertionError:
        pass
    assert not left, f"left of pod {pod.name}:\n" + "\n".join(left)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"hello-from-the-host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def httpd(kubelet: Kubelet, pod: Pod) -> str:
    script = "mkdir -p /tmp/www && echo served-by-$(hostname) > /tmp/www/index.html && " \
        "exec httpd -f -p 8080 -h /tmp/www"
    return kubelet.create_container(pod, "web", ["sh", "-c", script])


def wget(cri: CRI, cid: str, url: str) -> str:
    """``url`` fetched from container ``cid`` (busybox 1.35's ``wget -T`` crashes: ``timeout`` instead)."""
    def get() -> Any:
        r = cri.exec_sync(cid, ["timeout", "10", "wget", "-q", "-O", "-", url], timeout=30)
        return r.exit_code == 0 and r.out

    return str(wait_for(f"wget {url}", get, timeout=30, interval=1))


def test_pod_to_pod_and_pod_to_host(kubelet: Kubelet, containerd: Containerd, handler: str) -> None:
    """A pod of ``handler`` and a runc pod on the CNI bridge reach each other by pod IP, and the host's
    server on the bridge gateway; the host reaches them."""
    a = kubelet.run_pod(f"net-{handler}", handler)
    b = kubelet.run_pod("net-peer", "runc")
    wa, wb = httpd(kubelet, a), httpd(kubelet, b)
    assert a.ip != b.ip
    assert wget(kubelet.cri, wb, f"http://{a.ip}:8080/") == f"served-by-{a.name}\n"
    assert wget(kubelet.cri, wa, f"http://{b.ip}:8080/") == f"served-by-{b.name}\n"
    server = ThreadingHTTPServer((containerd.gateway, 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{containerd.gateway}:{server.server_address[1]}/"
        assert wget(kubelet.cri, wa, url) == "hello-from-the-host\n"
        import urllib.request

        with urllib.request.urlopen(f"http://{a.ip}:8080/", timeout=10) as r:
            assert r.read() == f"served-by-{a.name}\n".encode()
    finally:
        server.shutdown()
        server.server_close()
    for p, w in ((a, wa), (b, wb)):
        kubelet.remove_pod(p)
        assert_nothing_left(kubelet, p, [w])


def test_containerd_restart_keeps_the_pod(kubelet: Kubelet, containerd: Containerd, handler: str) -> None:
    p = kubelet.run_pod(f"restart-{handler}", handler)
    c = kubelet.create_container(p, "c1", SLEEPER)
    before = boot_id(kubelet.cri, c)
    containerd.restart()
    cri = kubelet.cri
    pods = {s.id: s for s in cri.list_pod_sandbox()}
    assert p.id in pods and cri.enum_name("PodSandboxState", pods[p.id].state) == "SANDBOX_READY"
    cs = cri.list_containers({"pod_sandbox_id": p.id})
    assert [(x.id, cri.enum_name("ContainerState", x.state)) for x in cs] == [(c, "CONTAINER_RUNNING")]
    assert boot_id(cri, c) == before
    r = cri.exec_sync(c, ["echo", "after-restart"], timeout=60)
    assert (r.exit_code, r.out) == (0, "after-restart\n")
    kubelet.remove_pod(p)
    assert_nothing_left(kubelet, p, [c])
