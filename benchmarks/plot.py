"""Draw the benchmark plot from a results file written by run.py.

    python benchmarks/plot.py benchmarks/results/<timestamp>.json docs/performance.png

Left: requests/s; right: p99 latency; both against the number of connections (1 request in
flight per connection), with the 10-in-flight shape as separate points. One line per server
and transport; each point is the median over rounds.
"""

from __future__ import annotations

import json
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLE = {
    "ours": ("pomelo-twisted", "tab:blue"),
    "pomelo": ("Pomelo 2.2.7 (Node)", "tab:orange"),
    "ceiling": ("bare Twisted (ceiling)", "tab:gray"),
}


def main(src: str, dst: str) -> None:
    with open(src) as f:
        data = json.load(f)
    meta, summary = data["meta"], data["summary"]
    shapes = [s for s in meta["shapes"] if s != "idle"]
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.5))
    for server in meta["servers"]:
        label, color = STYLE[server]
        for transport in meta["transports"]:
            ls, marker = ("-", "o") if transport == "tcp" else ("--", "s")
            pts = {}
            for shape in shapes:
                row = summary.get(f"{server}/{transport}/{shape}")
                if row and row.get("rps"):
                    conns, inflight = (int(x) for x in shape.split("x"))
                    pts[(conns, inflight)] = row
            for inflight in sorted({k[1] for k in pts}):
                xs = sorted(c for c, d in pts if d == inflight)
                rows = [pts[(c, inflight)] for c in xs]
                lab = f"{label}, {transport}" + (f", {inflight} in flight" if inflight != 1 else "")
                kw = dict(color=color, linestyle=ls if inflight == 1 else ":", marker=marker,
                          fillstyle="full" if inflight == 1 else "none", label=lab)
                ax_rps.plot(xs, [r["rps"] / 1000 for r in rows], **kw)
                ax_p99.plot(xs, [r["p99_us"] / 1000 for r in rows], **kw)
    conns_ticks = sorted({int(s.split("x")[0]) for s in shapes})
    for ax, title, unit in ((ax_rps, "throughput", "thousand requests/s"),
                            (ax_p99, "p99 latency", "ms")):
        ax.set_xscale("log")
        ax.set_xticks(conns_ticks, [f"{c:,}" for c in conns_ticks])
        ax.minorticks_off()
        if len(conns_ticks) == 1:
            ax.set_xlim(conns_ticks[0] / 2, conns_ticks[0] * 2)
        ax.set_xlabel("connections")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_p99.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    sparse = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
    ax_p99.yaxis.set_major_formatter(plain)
    ax_p99.yaxis.set_minor_formatter(sparse)
    ax_rps.set_ylim(bottom=0)
    handles, labels = ax_rps.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    m = meta.get("machine", {})
    note = " - QUICK RUN, NOT RESULTS" if meta.get("quick") else ""
    fig.suptitle(f"route connector.entryHandler.entry, server on 1 core "
                 f"({m.get('cpu_model', '')}), median of {meta['rounds']} x {meta['seconds']:g} s"
                 f"{note}", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 0.95))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
