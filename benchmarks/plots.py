"""PNG plots of a ``suite.py`` result (matplotlib, no display): what the README shows.

- ``start_times.png``: every start of the start section, per mode (bare boot, kata cold, from the
  template, from the VM cache, runc), as a box and its points, log scale;
- ``density_memory.png``: host PSS per sandbox against N (cold, template, runc; the 64 MB goal),
  and the host's MemAvailable against N;
- ``density_start.png``: the time to start the N-th sandbox against N;
- ``latency.png``: ``create`` + ``start`` and ``exec`` latency, and stdio throughput, per mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import GIB, MB

START_MODES = (  # key in the start section, label
    ("bare", "bare boot\n(QEMU start → exit)"), ("kata", "kata cold"), ("kata_tpl", "kata, template"),
    ("kata_cache", "kata, VM cache"), ("runc", "runc"))
DENSITY_STYLE = {"kata": ("kata, cold boots", "tab:red"), "kata_tpl": ("kata, template", "tab:blue"),
                 "runc": ("runc", "tab:gray")}


def _start_values(start: dict[str, Any], key: str) -> list[float]:
    rows = [r for r in start.get(key) or [] if r.get("ok")]
    return [r["to_exit"] if key == "bare" else r["wall"] for r in rows]


def write_all(res: dict[str, Any], out: Path) -> list[Path]:
    """Every plot that the result has data for, into ``out``; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stamp = (f"{res.get('finished', '')[:16].replace('T', ' ')} UTC, load average {res.get('load_start')} at the "
             f"start, {res.get('load_end')} at the end; 2 cores, QEMU under TCG")

    start = res.get("start") or {}
    data = [(label, _start_values(start, key)) for key, label in START_MODES]
    data = [(label, v) for label, v in data if v]
    if data:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.boxplot([v for _, v in data], tick_labels=[lb for lb, _ in data], widths=0.5, showfliers=False)
        for i, (_, v) in enumerate(data, start=1):
            ax.scatter([i + (j - (len(v) - 1) / 2) * 0.04 for j in range(len(v))], v, s=14, alpha=0.7, zorder=3)
        ax.set_yscale("log")
        ax.set_ylabel("seconds (log scale)")
        ax.set_title(f"`run` of `true`: start to exit, {start.get('repeat', '?')} runs per mode, interleaved")
        ax.grid(axis="y", which="both", alpha=0.3)
        fig.text(0.01, 0.01, stamp, fontsize=7, alpha=0.7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        written.append(_save(fig, plt, out / "start_times.png"))

    density = res.get("density") or {}
    if density:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for mode, r in density.items():
            label, color = DENSITY_STYLE.get(mode, (mode, None))
            pts = r.get("points") or []
            if not pts:
                continue
            ns = [p["n"] for p in pts]
            ax1.plot(ns, [p["pss_per_sandbox"] / MB for p in pts], "o-", label=label, color=color)
            ax2.plot(ns, [p["mem_available"] / GIB for p in pts], "o-", label=label, color=color)
            if r.get("stopped_early"):
                ax1.annotate("stopped", (ns[-1], pts[-1]["pss_per_sandbox"] / MB), textcoords="offset points",
                             xytext=(4, 4), fontsize=8, color=color)
        ax1.axhline(64, ls="--", color="tab:blue", alpha=0.6, label="goal, template: 64 MB at N=50")
        ax1.set_xlabel("N idle sandboxes")
        ax1.set_ylabel("host PSS per sandbox, MB (QEMU + proxy + shim)")
        ax1.set_ylim(bottom=0)
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.axhline(2, ls="--", color="black", alpha=0.5, label="stop: 2 GiB")
        ax2.set_xlabel("N idle sandboxes")
        ax2.set_ylabel("host MemAvailable, GiB")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
        fig.suptitle("Density: memory as idle sandboxes are added")
        fig.text(0.01, 0.01, stamp, fontsize=7, alpha=0.7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        written.append(_save(fig, plt, out / "density_memory.png"))

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for mode, r in density.items():
            label, color = DENSITY_STYLE.get(mode, (mode, None))
            starts = [s for s in r.get("starts") or [] if s.get("ok")]
            if starts:
                ax.plot([s["n"] for s in starts], [s["wall"] for s in starts], ".-", label=label, color=color)
        ax.set_yscale("log")
        ax.set_xlabel("N (the N-th sandbox, N-1 already running idle)")
        ax.set_ylabel("create + start of the N-th, seconds (log scale)")
        ax.set_title("Density: time to start the N-th sandbox")
        ax.legend(fontsize=8)
        ax.grid(which="both", alpha=0.3)
        fig.text(0.01, 0.01, stamp, fontsize=7, alpha=0.7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        written.append(_save(fig, plt, out / "density_start.png"))

    lat = (res.get("latency") or {}).get("summary")
    if lat:
        modes = [m for m in (res["latency"].get("modes") or []) if m in lat]
        labels = {"kata": "kata cold", "kata_tpl": "kata, template", "runc": "runc"}
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        width = 0.8 / max(len(modes), 1)
        for i, m in enumerate(modes):
            vals = [lat[m][k]["median"] or 0 for k in ("create_start", "exec")]
            ax1.bar([x + i * width for x in range(2)], vals, width, label=labels.get(m, m))
            io = [lat[m]["stdio"][d]["median"] or 0 for d in ("in", "out", "echo")] + [lat[m]["run_writing"]["median"]
                                                                                      or 0]
            ax2.bar([x + i * width for x in range(4)], io, width, label=labels.get(m, m))
        ax1.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(2)], ["create + start", "exec of true"])
        ax1.set_yscale("log")
        ax1.set_ylabel("seconds, median (log scale)")
        ax1.legend(fontsize=8)
        ax1.grid(axis="y", which="both", alpha=0.3)
        ax2.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(4)],
                       ["exec stdin", "exec stdout", "exec echo", "run stdout"])
        ax2.axhline(50, ls="--", color="black", alpha=0.5, label="goal: 50 MB/s")
        ax2.set_yscale("log")
        ax2.set_ylabel("MB/s, median (log scale)")
        ax2.legend(fontsize=8)
        ax2.grid(axis="y", which="both", alpha=0.3)
        fig.suptitle("Latency and stdio through the shim")
        fig.text(0.01, 0.01, stamp, fontsize=7, alpha=0.7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        written.append(_save(fig, plt, out / "latency.png"))
    return written


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
