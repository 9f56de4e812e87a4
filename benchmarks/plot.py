"""The PNG: p99 latency against the number of clients, one line per server."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a CI machine

import matplotlib.pyplot as plt

PANELS = [
    ("s1", "lateness_p99", "S1 storm: lateness p99 (s)"),
    ("s3", "latency_p99", "S3 fan-out: publish-to-receive p99 (s)"),
]


def write_png(path: Path, rows: list[dict[str, Any]]) -> None:
    panels = [p for p in PANELS if any(r["scenario"] == p[0] for r in rows)]
    if not panels:
        panels = PANELS[:1]  # an empty chart still says "nothing measured"
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (scenario, key, title) in zip(axes[0], panels, strict=True):
        ok = [r for r in rows if r["scenario"] == scenario and r["status"] == "ok"]
        for server in dict.fromkeys(r["server"] for r in ok):
            points = sorted(
                (r["clients"], r[key]) for r in ok if r["server"] == server and r[key] is not None
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=server)
        ax.set_title(title)
        ax.set_xlabel("clients")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
