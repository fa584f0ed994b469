"""A sandbox: one VM with its kata-proxy and guest agent, holding one or more containers.

The sandbox owns every host resource of the VM: the QEMU process, the proxy, the 9p shared
directory and the bind mounts in it. :meth:`Sandbox.destroy` removes all of them and is safe to
call on a half-created or already dead sandbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_runtime import daemons, faults, mounts
from kata_runtime.config import Config
from kata_runtime.errors import AgentError, HypervisorError, KataError, ProxyError
from kata_runtime.hypervisor.qemu import SHARED_FS_TAG
from kata_runtime.network import netns
from kata_runtime.oci.guest_spec import GUEST_SHARED_DIR, NetworkRequest, Share, guest_rootfs
from kata_runtime.phases import phase
from kata_runtime.store import ProcRef, SandboxRecord, SandboxStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from kata_runtime.agent import AgentClient
    from kata_runtime.cgroups import HostCgroup
    from kata_runtime.hypervisor import Hypervisor

    HypervisorFactory = Callable[["Sandbox"], Hypervisor]
    AgentFactory = Callable[["Sandbox", str], AgentClient]


def qemu_for(sandbox: Sandbox) -> Hypervisor:
    """The sandbox's VM as QEMU runs it (the default :class:`Hypervisor`)."""
    from kata_runtime.hypervisor.qemu import QemuVM
    from kata_runtime.resources import VMSize

    rec = sandbox.rec
    return QemuVM(sandbox.id, sandbox.cfg.hypervisor, sandbox.store.vm_dir(sandbox.id), rec.accel or "tcg",
                  sandbox.shared_dir, rec.qemu, sock_dir=sandbox.store.socket_dir(sandbox.id),
                  size=VMSize(rec.vcpus, rec.memory_mib) if rec.vcpus and rec.memory_mib else None)


def agent_for(sandbox: Sandbox, container: str) -> AgentClient:
    """The sandbox's agent through its kata-proxy (the default :class:`AgentClient`)."""
    from kata_runtime import agent

    return agent.connect(sandbox.cfg.agent.transport, str(sandbox.proxy_socket), container,
                         sandbox.cfg.agent.request_timeout)

log = logging.getLogger(__name__)

HOST_SHARED_ROOT = Path("/run/kata-containers/shared/sandboxes")
# A clone's or cached VM's agent answers within a second (it is past its start): one that does not
# answer within this is taken to be broken, and the sandbox boots cold instead.
CLONE_AGENT_TIMEOUT = 10.0


def choose_accel(cfg: Config) -> tuple[str, str]:
    """("kvm"|"tcg", why), from the configuration and what this host's KVM can really do."""
    hv = cfg.hypervisor
    if hv.accel == "tcg":
        return "tcg", "configured"
    try:
        from kata_runtime.hypervisor.accel import choose_accel as probe
    except ImportError:
        return ("kvm", "configured") if hv.accel == "kvm" else ("tcg", "no KVM probe available")
    return probe(hv.accel, hv.path, hv.kernel, hv.initrd)


class Sandbox:
    """Runtime view of one sandbox; ``rec`` is its persistent record."""

    def __init__(self, store: SandboxStore, cfg: Config, rec: SandboxRecord,
                 hypervisor: HypervisorFactory | None = None, agent: AgentFactory | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.rec = rec
        self._make_vm = hypervisor or qemu_for
        self._make_agent = agent or agent_for
        self._agent: AgentClient | None = None
        # whether the agent is known to answer: a loaded sandbox past "creating" has answered
        self.agent_answered = any(c.status.value != "creating" for c in rec.containers.values())

    # -- parts ------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.rec.id

    @property
    def proxy_socket(self) -> Path:
        return self.store.proxy_socket(self.id)

    @property
    def shared_dir(self) -> Path:
        return Path(self.rec.shared_dir) if self.rec.shared_dir else HOST_SHARED_ROOT / self.id

    def vm(self) -> Hypervisor:
        return self._make_vm(self)

    def agent(self, container: str | None = None) -> AgentClient:
        """The client of this sandbox's agent (``container`` names the container in its errors)."""
        if self._agent is None:
            self._agent = self._make_agent(self, container or self.id)
        return self._agent

    def vm_alive(self) -> bool:
        return self.rec.qemu is not None and self.rec.qemu.alive()

    def save(self) -> None:
        self.store.save(self.rec)

    # -- lifecycle --------------------------------------------------------------------------------
    def setup_network(self, req: NetworkRequest) -> None:
        """Settle the sandbox's network namespace on the host: the engine's, or a new one that
        the sandbox owns (docker gives no path: its prestart hook moves the veth into it).
        An internetworking model this host cannot do is refused first."""
        if self.cfg.runtime.internetworking_model == "macvtap":
            from kata_runtime.network import macvtap

            why = macvtap.missing()
            if why:
                raise KataError(f"internetworking_model macvtap: {why}", container=self.id, step="create")
        if req.path:
            self.rec.netns, self.rec.netns_owned = req.path, False
            self.save()
            return
        path = netns.NETNS_DIR / f"kata-{self.store.digest(self.id)}"
        self.rec.netns, self.rec.netns_owned = str(path), True
        self.save()  # first: destroy() must find it whatever happens next
        try:
            netns.create(path)
        except OSError as e:
            raise KataError(f"cannot create the network namespace {path}: {e.strerror or e}", container=self.id,
                            step="create") from None

    def boot(self) -> None:
        """Get the sandbox a VM whose agent answers, then set the sandbox up in the guest.

        The VM comes from the VM cache (``[factory] vm_cache_number``), else is cloned from the
        VM template (``enable_template``), else boots cold; a cache or template that fails falls
        back to the next way. Each resource is recorded (and saved) as soon as it exists, so
        that :meth:`destroy` finds it whatever step fails."""
        hv = self.cfg.hypervisor
        self.rec.accel, why = choose_accel(self.cfg)
        log.debug("sandbox %s: accelerator %s (%s)", self.id, self.rec.accel, why)
        self.rec.shared_dir = str(HOST_SHARED_ROOT / self.id)
        self.save()
        t0 = time.monotonic()
        if not (self._default_size() and (self._vm_from_cache() or self._vm_from_template())):
            self.shared_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            vm = self.vm()
            self._launch(vm)
            self._start_proxy(vm)
            self._wait_agent(vm, self.cfg.agent.dial_timeout)
        phase("agent_ready")
        log.debug("sandbox %s: agent ready after %.3fs", self.id, time.monotonic() - t0)
        if log.isEnabledFor(logging.DEBUG):
            v = self.agent().version()
            log.debug("guest boot root_ready %s agent_started %s agent_serving %s", v["root_ready"],
                      v["agent_started"], v["agent_serving"])
        self.agent().create_sandbox(self.id, self.id[:63], [{
            "driver": "9p", "source": SHARED_FS_TAG, "fstype": "9p", "mount_point": GUEST_SHARED_DIR,
            "options": ["trans=virtio", "version=9p2000.L", f"msize={hv.msize_9p}", "cache=mmap"]}])
        phase("sandbox_created")

    def _default_size(self) -> bool:
        """Whether the VM is to have the configuration's size, that of the VM cache's VMs and of
        the template's clones (a sandbox sized by its spec boots cold)."""
        from kata_runtime.resources import limits

        lim = limits(self.cfg.hypervisor)
        if not self.rec.vcpus or (self.rec.vcpus, self.rec.memory_mib) == (lim.default_vcpus, lim.default_mib):
            return True
        if self.cfg.factory.vm_cache_number > 0 or self.cfg.factory.enable_template:
            log.debug("sandbox %s: %d vCPUs and %d MiB, not the VM factory's %d and %d: cold boot", self.id,
                      self.rec.vcpus, self.rec.memory_mib, lim.default_vcpus, lim.default_mib)
        return False

    def setup_cgroup(self, cg: HostCgroup, resources: dict[str, Any]) -> None:
        """Make the sandbox's cgroup on the host with the limits of ``resources``, recorded first
        (:meth:`destroy` removes it whatever happens next)."""
        from kata_runtime import cgroups

        self.rec.cgroup = cg.to_json()
        self.store.save_cgroup(self.id, self.rec.cgroup)
        self.save()
        try:
            cgroups.make(cg, resources)
        except OSError as e:
            raise KataError(f"cannot make the host cgroup {cg.path}: {e.strerror or e}", container=self.id,
                            step="create") from None
        self.rec.cgroup = cg.to_json()
        self.store.save_cgroup(self.id, self.rec.cgroup)
        self.save()

    def join_cgroup(self, *refs: ProcRef | None) -> None:
        """Put processes of the sandbox (QEMU with its threads, kata-proxy, kata-shims) in its cgroup."""
        if self.rec.cgroup is None:
            return
        from kata_runtime import cgroups

        cg = cgroups.HostCgroup.from_json(self.rec.cgroup)
        for ref in refs:
            if ref is not None and ref.alive():
                cgroups.join(cg, ref.pid)

    def _launch(self, vm: Hypervisor) -> None:
        t0 = time.monotonic()
        try:
            with netns.entered(self.rec.netns or None):  # its network devices are opened there
                vm.launch(self.cfg.source)
        finally:
            self.rec.qemu = vm.proc
            self.save()
        phase("qemu_launched")
        log.debug("sandbox %s: QEMU up in %.3fs", self.id, time.monotonic() - t0)

    def _start_proxy(self, vm: Hypervisor) -> None:
        self.rec.proxy = daemons.start_proxy(self.id, vm.channel, self.proxy_socket,
                                             self.store.vm_dir(self.id) / "proxy.log", self.cfg.proxy_path)
        self.save()

    def _vm_from_template(self) -> bool:
        """With ``[factory] enable_template``: clone the VM template (made first when there is
        none or it is stale). A template that fails (QEMU does not restore it, or the clone's
        agent does not answer soon) is removed, with a warning, and False is returned with
        nothing of the attempt left: the caller boots cold."""
        if not self.cfg.factory.enable_template:
            return False
        from kata_runtime.factory import template

        clonable, why = template.for_clone(self.cfg, self.rec.accel, self.cfg.agent.dial_timeout)
        if clonable is None:
            log.warning("sandbox %s: %s: cold boot", self.id, why)
            return False
        self.shared_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        vm = self.vm()
        vm.use_template_ram(clonable.paths.memory)
        try:
            try:
                self._launch(vm)
            finally:
                clonable.lock.release()  # QEMU has mapped the RAM file (or is gone)
            vm.restore(clonable.paths.state)
            phase("vm_restored")
            self._start_proxy(vm)
            self._wait_agent(vm, min(CLONE_AGENT_TIMEOUT, self.cfg.agent.dial_timeout))
            self.agent().refresh_clone(time.time(), os.urandom(64))  # it woke with the template's clock and entropy
        except (HypervisorError, AgentError, ProxyError) as e:
            removed = template.remove_broken(self.cfg, clonable)
            log.warning("sandbox %s: the VM template at %s is broken (%s)%s: cold boot", self.id,
                        clonable.paths.root, e.msg, ": removed, the next create makes a new one" if removed else "")
            self._discard_vm(vm)
            return False
        return True

    def _vm_from_cache(self) -> bool:
        """With ``[factory] vm_cache_number``: take a VM that the cache daemon booted, cold, for
        no one in particular (its QEMU, sockets, files and 9p directory become this sandbox's) and
        start this sandbox's kata-proxy on it. False (and a debug line) when the daemon is absent,
        empty or keeps VMs of another configuration; False with a warning, and nothing of it left,
        when the VM taken does not answer."""
        if self.cfg.factory.vm_cache_number <= 0:
            return False
        from kata_runtime.factory import cache

        def own(ref: ProcRef) -> None:
            self.rec.qemu = ref
            self.save()

        targets = cache.Targets(sock_dir=self.store.socket_dir(self.id), vm_dir=self.store.vm_dir(self.id),
                                shared_dir=self.shared_dir)
        taken, why = cache.take(self.cfg, self.rec.accel, self.id, targets, own)
        if taken is None:
            log.debug("sandbox %s: %s: no VM from the cache", self.id, why)
            return False
        phase("vm_from_cache")
        vm = self.vm()
        try:
            self._start_proxy(vm)
            self._wait_agent(vm, min(CLONE_AGENT_TIMEOUT, self.cfg.agent.dial_timeout))
        except (HypervisorError, AgentError, ProxyError) as e:
            log.warning("sandbox %s: the VM from the cache at %s does not answer (%s): cold boot", self.id,
                        self.cfg.factory.vm_cache_endpoint, e.msg)
            self._discard_vm(vm)
            return False
        return True

    def _discard_vm(self, vm: Hypervisor) -> None:
        """Undo a VM that was not good (a clone that did not restore, a cached VM that does not
        answer): its agent client, QEMU, kata-proxy and sockets go, the record forgets them."""
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        self.agent_answered = False
        if self.rec.qemu is None:
            vm.adopt()  # launched, but its pid was not read: it is found by its pid file, as destroy() does
        vm.stop()
        daemons.kill(self.rec.proxy)
        self.rec.qemu = self.rec.proxy = None
        self.save()
        sockets = self.store.socket_dir(self.id)
        for name in ("qmp.sock", "kata.sock", "proxy.sock"):
            (sockets / name).unlink(missing_ok=True)

    def _qemu_in_netns(self) -> bool:
        """Whether the VM's QEMU lives in the sandbox's network namespace and so opens a tap there
        by its name. A VM from the cache was born in the host's: its taps are handed to it open."""
        if self.rec.qemu is None or not self.rec.netns:
            return True
        try:
            return netns.same(f"/proc/{self.rec.qemu.pid}/ns/net", self.rec.netns)
        except OSError:
            return True

    def _wait_agent(self, vm: Hypervisor, timeout: float) -> None:
        """Wait for the agent (see :func:`kata_runtime.factory.ready.wait_agent`)."""
        from kata_runtime.factory.ready import wait_agent

        wait_agent(self.agent(), vm, timeout, self.id, "create")
        self.agent_answered = True

    def connect_network(self) -> list[str]:
        """Follow the sandbox's network namespace: connect every interface there that is not
        connected yet (a device of the internetworking model, a hotplugged NIC with the same MAC,
        the guest told its addresses and MTU), disconnect the ones that went, then set the
        routes. Run after the prestart hooks (when docker's veth arrives) and by ``kata-network
        sync`` (kata-netmon: ``docker network connect``). Returns the interfaces connected now.

        Each endpoint is recorded before anything of it is made, so that :meth:`destroy` can undo
        what a killed runtime made; one that fails is undone at once (the VM, the namespace and
        the record are left as they were) and the error goes up."""
        model = self.cfg.runtime.internetworking_model
        if not self.rec.netns or model == "none":
            return []
        from kata_runtime import network
        from kata_runtime.network.endpoints import TAP_SUFFIX, Endpoint, scan

        try:
            found, routes = scan(self.rec.netns)
        except OSError as e:
            raise KataError(f"network: cannot read the network namespace {self.rec.netns}: {e}", container=self.id,
                            step="create") from None
        vm = self.vm()
        present = {ep.name: ep for ep in found}
        for d in list(self.rec.endpoints):
            ep = Endpoint.from_json(d)
            now = present.get(ep.name)
            if now is not None and now.mac in (ep.mac, ep.veth_mac):
                continue
            vm.unplug_nic(ep.index)  # the engine took its interface away: so goes the guest's
            self._drop_endpoint(d, gone=True)
        known = {ep["name"] for ep in self.rec.endpoints}
        connected = []
        for ep in found:
            if ep.name in known:
                continue
            used = {e["index"] for e in self.rec.endpoints}
            ep.index = next(i for i in range(len(used) + 1) if i not in used)
            ep.tap = f"tap{ep.index}{TAP_SUFFIX}"
            net = network.model(model)
            net.prepare(ep, routes)
            record = ep.to_json()
            self.rec.endpoints.append(record)
            self.save()  # first: destroy() must find what of it exists whatever happens next
            plugged = False
            try:
                try:
                    fd = net.attach(self.rec.netns, ep)
                    if fd is None and not self._qemu_in_netns():  # a VM from the cache: born in the host's
                        from kata_runtime.network.tcfilter import open_tap

                        fd = open_tap(self.rec.netns, ep.tap)
                except Exception as e:  # noqa: BLE001 - netlink errors of pyroute2 have no common base
                    raise KataError(f"network: cannot connect {ep.name} to the VM ({model}): {e}", container=self.id,
                                    step="create") from None
                try:
                    faults.run_hook_before_hotplug(self.rec.netns, ep.tap)
                    vm.hotplug_nic(ep.index, ep.tap, ep.mac, fd=fd)
                    plugged = True
                finally:
                    if fd is not None:
                        os.close(fd)  # QEMU has its own
                self.agent().update_interface(ep.name, ep.mac, ep.mtu,
                                              [(a.address, a.prefix, a.family) for a in ep.addresses])
            except BaseException:
                if plugged:
                    with contextlib.suppress(KataError):
                        vm.unplug_nic(ep.index)
                self._drop_endpoint(record, gone=False)
                raise
            connected.append(ep.name)
            phase("network_connected")
        if found:
            self.agent().update_routes([r.for_guest() for r in routes])
        return connected

    def _drop_endpoint(self, record: dict[str, Any], gone: bool) -> None:
        """Undo an endpoint's device in the namespace and forget it. If that fails, the failure
        is logged and the endpoint stays recorded (a later delete tries again), unless its
        interface is ``gone`` from the namespace (the VM let go of it: nothing is left to retry)."""
        from kata_runtime import network
        from kata_runtime.network.endpoints import Endpoint

        ep = Endpoint.from_json(record)
        try:
            network.model(ep.model).detach(self.rec.netns, ep)
        except Exception as e:  # noqa: BLE001 - netlink errors of pyroute2 have no common base
            log.warning("sandbox %s: removing %s from %s: %s", self.id, ep.tap, self.rec.netns, e)
            if not gone:
                return
        self.rec.endpoints.remove(record)
        self.save()

    def start_netmon(self, runtime: str, config: str) -> None:
        """With ``[netmon] enable_netmon``: kata-netmon follows the namespace from now on."""
        if not self.cfg.netmon.enable_netmon or not self.rec.netns or self.rec.qemu is None or \
                self.cfg.runtime.internetworking_model == "none":
            return
        self.rec.netmon = daemons.start_netmon(self.id, self.rec.netns, runtime, self.store.root, config,
                                               self.rec.qemu.pid, self.store.vm_dir(self.id) / "netmon.log",
                                               self.cfg.netmon.path)
        self.save()
        self.join_cgroup(self.rec.netmon)

    def _disconnect_network(self, errors: list[str]) -> None:
        """Remove our devices from the namespace and give its interfaces back what the model
        took (after QEMU let go of the taps)."""
        if not self.rec.endpoints or not self.rec.netns or not os.path.exists(self.rec.netns):
            return
        from kata_runtime import network
        from kata_runtime.network.endpoints import Endpoint

        for d in self.rec.endpoints:
            ep = Endpoint.from_json(d)
            try:
                network.model(ep.model).detach(self.rec.netns, ep)
            except Exception as e:  # noqa: BLE001 - netlink errors of pyroute2 have no common base
                errors.append(f"cannot remove {ep.tap} ({ep.model}) from {self.rec.netns}: {e}")

    def share_rootfs(self, cid: str, rootfs: Path, readonly: bool) -> tuple[str, str]:
        """Bind the container's rootfs into the shared directory: (host mount, guest path)."""
        target = self.shared_dir / cid / "rootfs"
        try:
            mounts.bind(str(rootfs), str(target), readonly=readonly)
        except OSError as e:
            raise KataError(f"cannot share rootfs {rootfs} with the VM: {e.strerror}", container=cid,
                            step="create") from None
        return str(target), guest_rootfs(cid)

    def share(self, cid: str, shares: list[Share]) -> None:
        """Bind each host file or directory of the container's mounts into its own subtree of the
        shared directory (read-only on the host too when the mount is ``ro``)."""
        top = self.shared_dir / cid / "mounts"
        for sh in shares:
            target = self.shared_dir / sh.target
            if top not in target.parents:  # pragma: no cover - guest_spec makes flat, sanitized names
                raise KataError(f"share target {target} is outside {top}", container=cid, step="create")
            try:
                mounts.bind(sh.source, str(target), readonly=sh.readonly)
            except OSError as e:
                raise KataError(f"cannot share {sh.source} with the VM: {e.strerror}", container=cid,
                                step="create") from None

    def remove_container(self, cid: str) -> None:
        """Remove one container and only it (a pod's other containers and its VM stay): its
        processes' shims, the container in the guest, its shares on the host, its record. Every
        step is attempted; the record goes only when nothing of it is left."""
        c = self.rec.containers.get(cid)
        errors: list[str] = []
        if c is not None:
            for ref in [c.shim, *(e.shim for e in c.execs.values())]:
                daemons.kill(ref, graceful=False)
        if self.vm_alive() and self.rec.proxy is not None and self.rec.proxy.alive():
            try:
                self.agent().remove_container(cid)
            except KataError as e:
                if "does not exist" not in e.msg:
                    errors.append(str(e))
        _unshare_tree(self.shared_dir / cid, errors)
        if errors:
            raise KataError("; ".join(errors), container=cid, step="delete")
        self.rec.containers.pop(cid, None)
        self.save()

    def destroy(self, flush_guest: bool = False) -> None:
        """Tear everything down; every step is attempted even when an earlier one fails, and the
        record is removed only when nothing of the sandbox is left. ``flush_guest``: processes
        were still running, let the guest sync what they wrote first (a workload that exited has
        nothing in flight: 9p writes reach the host as they are made, and the CLI skips the gRPC
        import, 0.25 s)."""
        errors: list[str] = []
        vm = self.vm()
        if self.rec.qemu is None:
            vm.adopt()
        if flush_guest and self.agent_answered and vm.alive() and self.rec.proxy is not None and \
                self.rec.proxy.alive():
            with contextlib.suppress(KataError):
                self.agent().destroy_sandbox()
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self.rec.netmon is not None:
            daemons.kill(self.rec.netmon)
            daemons.kill_network_syncs(self.store.root, self.id)
        for c in self.rec.containers.values():
            for ref in [c.shim, *(e.shim for e in c.execs.values())]:
                daemons.kill(ref, graceful=False)
        try:
            vm.stop()
        except HypervisorError as e:
            errors.append(str(e))
        daemons.kill(self.rec.proxy)
        if not vm.alive() and not self.rec.netns_owned:  # ours goes whole, with its taps, below
            self._disconnect_network(errors)
        _unshare_tree(self.shared_dir, errors)
        if self.rec.cgroup is not None:
            from kata_runtime import cgroups

            cgroups.remove(cgroups.HostCgroup.from_json(self.rec.cgroup), errors)
        if self.rec.netns_owned and self.rec.netns:
            try:
                netns.remove(Path(self.rec.netns))
            except OSError as e:
                errors.append(f"cannot remove the network namespace {self.rec.netns}: {e.strerror or e}")
        if errors:  # keep the record: it is how a later delete finds what is still there
            raise KataError("; ".join(errors), container=self.id, step="delete")
        self.store.remove(self.id)


def _unshare_tree(top: Path, errors: list[str]) -> None:
    """Unmount every share under ``top`` (deepest first), then remove what is left of it."""
    try:
        for point in mounts.mounted_under(str(top)):
            mounts.unmount(point)
    except OSError as e:
        errors.append(str(e))
    _remove_empty_tree(top)


def _remove_empty_tree(top: Path) -> None:
    """Remove a tree of empty directories and of the empty files that were the targets of single
    file bind mounts, only once nothing is mounted under it: the files of a container's rootfs or
    volume must never be deleted through a mount that is still there."""
    if not top.is_dir() or mounts.mounted_under(str(top)):
        return
    for dirpath, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
                if st.st_size == 0 and os.path.isfile(path) and not os.path.islink(path):
                    os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
