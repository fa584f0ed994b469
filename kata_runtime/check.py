"""``kata-check`` (can this host run us, with KVM or TCG?) and ``kata-env`` (a TOML report of
versions, configuration and paths), as Kata 1.x's commands of the same names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_runtime import OCI_VERSION, __version__
from kata_runtime.config import Config, load_config
from kata_runtime.errors import KataError

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

ENV_FORMAT_VERSION = "1.0.0"
KVM_DEVICE = Path("/dev/kvm")
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def component_path(configured: str, name: str) -> str:
    """The kata-proxy or kata-shim to run: the configured path, else the one in this package."""
    if configured:
        return configured
    return str(Path(__file__).resolve().parent / "bin" / name)


def decide_accel(cfg: Config) -> tuple[str, str]:
    """(accelerator, reason) from ``hypervisor.accel.choose_accel``; ``("unknown", why)`` when
    the decision cannot be made."""
    hv = cfg.hypervisor
    try:
        from kata_runtime.hypervisor.accel import choose_accel
    except ImportError as e:
        return "unknown", f"accelerator probe unavailable: {e}"
    initrd = hv.initrd if hv.initrd and Path(hv.initrd).exists() else ""
    try:
        accel, reason = choose_accel(hv.accel, hv.path, hv.kernel, initrd)
    except KataError as e:
        return "unknown", str(e)
    return str(accel), str(reason)


def _exists(path: str) -> bool:
    return bool(path) and Path(path).exists()


def _executable(path: str) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def host_problems(cfg: Config) -> tuple[list[str], list[str]]:
    """(report lines, problems) for the files and devices the configuration needs."""
    hv = cfg.hypervisor
    lines: list[str] = []
    problems: list[str] = []

    def check(label: str, path: str, ok: bool, required: bool = True) -> None:
        lines.append(f"{label} {path or '(not set)'}: {'found' if ok else 'not found'}")
        if required and not ok:
            problems.append(f"{label} {path or '(not set)'} not found")

    check("qemu", hv.path, _executable(hv.path))
    check("kernel", hv.kernel, _exists(hv.kernel))
    has_initrd, has_image = _exists(hv.initrd), _exists(hv.image)
    check("initrd", hv.initrd, has_initrd, required=False)
    check("image", hv.image, has_image, required=False)
    if not (has_initrd or has_image):
        problems.append("neither the guest initrd nor the guest image exists")
    for label, name, configured in (("proxy", "kata-proxy", cfg.proxy_path),
                                    ("shim", "kata-shim", cfg.shim_path)):
        check(label, component_path(configured, name), _exists(component_path(configured, name)))
    kvm = KVM_DEVICE.exists()
    lines.append(f"{KVM_DEVICE}: {'present' if kvm else 'not present'}"
                 + ("" if not kvm or os.access(KVM_DEVICE, os.R_OK | os.W_OK) else " (no access)"))
    return lines, problems


def run_check(opts: RuntimeOptions) -> tuple[list[str], bool]:
    """What the host has, ending with the verdict line, and whether it can run containers."""
    cfg = load_config(opts.kata_config)
    lines, problems = host_problems(cfg)
    lines.insert(0, f"configuration: {cfg.source or '(built-in defaults)'}")
    if problems:
        return lines + [f"System is not capable of running Kata Containers: {'; '.join(problems)}"], False
    accel, reason = decide_accel(cfg)
    if accel not in ("kvm", "tcg"):
        return lines + [f"System is not capable of running Kata Containers: no usable accelerator: {reason}"], False
    return lines + [f"System is capable of running Kata Containers (accelerator: {accel}: {reason})"], True


def qemu_version(path: str) -> str:
    """The first line of ``qemu --version``, or why there is none."""
    if not _executable(path):
        return "not found"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown: {e}"
    first = out.stdout.strip().splitlines()
    return first[0] if first else f"unknown: exit status {out.returncode}"


def _os_release() -> dict[str, str]:
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(candidate).read_text()
        except OSError:
            continue
        info = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key.strip()] = value.strip().strip('"').strip("'")
        return info
    return {}


def _cpu() -> dict[str, str]:
    vendor = model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "model name" and not model:
                    model = value.strip()
                if vendor and model:
                    break
    except OSError:
        pass
    return {"Vendor": vendor, "Model": model}


def _runtime_path() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.basename(argv0) == "kata-runtime":
        return os.path.abspath(argv0)
    return shutil.which("kata-runtime") or argv0


def env_data(opts: RuntimeOptions) -> dict[str, Any]:
    """The kata-env report as nested tables (Kata 1.x's section and key names)."""
    from kata_runtime.build import commit

    cfg = load_config(opts.kata_config)
    hv = cfg.hypervisor
    _, problems = host_problems(cfg)
    accel, reason = decide_accel(cfg)
    distro = _os_release()
    uname = os.uname()
    return {
        "Meta": {"Version": ENV_FORMAT_VERSION},
        "Runtime": {
            "Path": _runtime_path(),
            "Debug": bool(opts.debug or cfg.runtime.enable_debug),
            "Version": {"Semver": __version__, "Commit": commit(), "OCI": OCI_VERSION},
            "Config": {"Path": cfg.source},
        },
        "Hypervisor": {
            "Path": hv.path,
            "Version": qemu_version(hv.path),
            "MachineType": hv.machine_type,
            "Accel": accel,
            "AccelReason": reason,
            "AccelSetting": hv.accel,
            "SharedFS": hv.shared_fs,
            "DefaultVCPUs": hv.default_vcpus,
            "DefaultMemory": hv.default_memory,
            "Debug": hv.enable_debug,
        },
        "Kernel": {"Path": hv.kernel, "Parameters": hv.kernel_params},
        "Initrd": {"Path": hv.initrd},
        "Image": {"Path": hv.image},
        "Proxy": {"Type": "kataProxy", "Path": component_path(cfg.proxy_path, "kata-proxy")},
        "Shim": {"Type": "kataShim", "Path": component_path(cfg.shim_path, "kata-shim")},
        "Agent": {"Type": "kata"},
        "Factory": {"EnableTemplate": cfg.factory.enable_template,
                    "TemplatePath": cfg.factory.template_path},
        "Host": {
            "Kernel": uname.release,
            "Architecture": _GO_ARCH.get(uname.machine, uname.machine),
            "VMContainerCapable": not problems and accel in ("kvm", "tcg"),
            "Distro": {"Name": distro.get("NAME", ""), "Version": distro.get("VERSION_ID", "")},
            "CPU": _cpu(),
        },
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic-string escapes


def to_toml(data: dict[str, Any], _prefix: str = "", _depth: int = 0) -> str:
    """``data`` (nested dicts of scalars and lists) as TOML, Kata's indented layout."""
    indent = "  " * _depth
    out: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict):
            out.append(f"{indent}{key} = {_toml_value(value)}\n")
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{_prefix}.{key}" if _prefix else key
            out.append(("\n" if not _prefix else "") + f"{indent}[{name}]\n")
            out.append(to_toml(value, name, _depth + 1))
    return "".join(out)


def env_report(opts: RuntimeOptions, *, as_json: bool = False) -> str:
    """The kata-env report: TOML (or JSON with ``as_json``), newline-terminated."""
    data = env_data(opts)
    if as_json:
        return json.dumps(data, indent=2) + "\n"
    return to_toml(data).lstrip("\n")
