"""Local OCI images for the CRI tests (no registry here): a busybox workload image and a pause image,
both one layer of busybox-static with its applets, written as an OCI image-layout tar archive that
``ctr images import`` reads."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"

# The pause process: PID 1 of the pod that sleeps until TERM or INT (a shell as PID 1 gets no
# default signal action, hence the trap).
PAUSE_CMD = ["/bin/sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done']


def _layer() -> bytes:
    """An uncompressed layer tar: /bin/busybox, its applets as symlinks, the usual directories."""
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(ti)

        dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "var",
                "var/www", "home"}
        for d in sorted(dirs):
            add_dir(d)
        add_dir("tmp", 0o1777)
        data = Path(BUSYBOX).read_bytes()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
        tar.addfile(ti, io.BytesIO(data))
        for a in sorted(set(applets)):
            a = a.lstrip("/")
            if a == "bin/busybox" or a.rsplit("/", 1)[0] not in dirs:
                continue
            ti = tarfile.TarInfo(a)
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "/bin/busybox", 0
            tar.addfile(ti)
        passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
        for name, text in (("etc/passwd", passwd), ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):
            raw = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(raw), 0o644, 0
            tar.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_oci_archive(path: Path, images: dict[str, dict[str, Any]]) -> Path:
    """An OCI image-layout tar at ``path`` with one manifest per image name in ``images``; each value
    is the image config's ``config`` object (Entrypoint, Cmd, Env, StopSignal...)."""
    layer = _layer()
    blobs: dict[str, bytes] = {_digest(layer): layer}
    manifests = []
    for name, cfg in images.items():
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/", **cfg},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "tests/cri/images.py"}],
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                        "size": len(layer)}],
        }, sort_keys=True).encode()
        blobs[_digest(config)] = config
        blobs[_digest(manifest)] = manifest
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
                          "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
                          "annotations": {"io.containerd.image.name": name,
                                          "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": manifests}, sort_keys=True).encode()
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tar.addfile(ti, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, data in blobs.items():
            add("blobs/sha256/" + d.split(":", 1)[1], data)
    return path
