"""Results of ``unipar bench``: the data, and its table, JSON and PNG forms.

The table has one row per workload and one column per backend; a cell holds the median, its
ratio to the baseline backend, and min-max below. A second table divides each unipar backend by
its plain counterpart (dask / dask-plain, ...): the facade's overhead. The PNG draws one small
bar chart per workload, log-scaled when the values span more than :data:`LOG_SPAN`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from .workloads import LIFECYCLE, WORKLOADS, Sizes

__all__ = ["BackendResult", "Report", "FACADE_PAIRS"]

LOG_SPAN = 30.0   # max/min ratio above which a plot switches to a log axis
FACADE_PAIRS = (("dask", "dask-plain"), ("spark", "spark-plain"), ("ray", "ray-plain"))
_BY_NAME = {w.name: w for w in WORKLOADS + LIFECYCLE}
GEOMEAN_LABEL = "geometric mean (all but serial Python)"
_COLOURS = {"native": "#1f77b4", "local": "#7f7f7f", "dask": "#ff7f0e", "spark": "#d62728",
            "ray": "#9467bd"}


@dataclass
class BackendResult:
    """Everything measured for one backend over all repeats."""

    backend: str
    error: str | None = None                    # never started (or not installed)
    samples: dict[str, list[float]] = field(default_factory=dict)
    na: set[str] = field(default_factory=set)   # no counterpart on this engine
    failures: dict[str, str] = field(default_factory=dict)
    peak_rss: list[int] = field(default_factory=list)   # whole tree, per repeat
    notes: list[str] = field(default_factory=list)

    def stats(self, name: str) -> tuple[float, float, float] | None:
        """(median, min, max) of a workload, or None when it has no sample."""
        values = self.samples.get(name)
        if not values:
            return None
        return statistics.median(values), min(values), max(values)

    def to_json(self, names: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "notes": self.notes,
                               "peak_rss_bytes": self.peak_rss, "workloads": {}}
        for name in names:
            entry: dict[str, Any] = {"unit": _BY_NAME[name].unit,
                                     "samples": self.samples.get(name, [])}
            st = self.stats(name)
            if st:
                entry.update(median=st[0], min=st[1], max=st[2])
            if name in self.na:
                entry["na"] = True
            if name in self.failures:
                entry["error"] = self.failures[name]
            out["workloads"][name] = entry
        return out


def fmt(value: float, unit: str) -> str:
    """A value with a readable unit: 12 µs, 3.4 ms, 1.23 s, 250 MB."""
    if unit == "MB":
        return f"{value:,.0f} MB"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def fmt_ratio(ratio: float) -> str:
    """0.0071, 1.6, 28, 1,300: two significant figures at most, never scientific notation."""
    if ratio < 0.95:
        return f"{ratio:.2g}"
    if ratio < 10:
        return f"{ratio:.1f}"
    return f"{float(f'{ratio:.2g}'):,.0f}"


@dataclass
class Report:
    results: list[BackendResult]
    names: list[str]            # workloads in display order, life cycle included
    baseline: str
    sizes: Sizes
    meta: dict[str, Any]

    def by_name(self, backend: str) -> BackendResult | None:
        return next((r for r in self.results if r.backend == backend), None)

    def ratio(self, backend: str, other: str, name: str) -> float | None:
        a, b = self.by_name(backend), self.by_name(other)
        sa, sb = (a.stats(name) if a else None), (b.stats(name) if b else None)
        if not sa or not sb or sb[0] <= 0:
            return None
        return sa[0] / sb[0]

    def label(self, name: str) -> str:
        return _BY_NAME[name].describe(self.sizes)

    # -- JSON --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        facade = {f"{a}/{b}": {n: self.ratio(a, b, n) for n in self.names}
                  for a, b in FACADE_PAIRS if self.by_name(a) and self.by_name(b)}
        return {"meta": self.meta, "baseline": self.baseline,
                "workloads": {n: {"label": self.label(n), "unit": _BY_NAME[n].unit}
                              for n in self.names},
                "backends": {r.backend: r.to_json(self.names) for r in self.results},
                "ratio_to_baseline": {r.backend: {n: self.ratio(r.backend, self.baseline, n)
                                                  for n in self.names} for r in self.results},
                "facade_overhead": facade}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Report":
        """The report that :meth:`to_json` wrote (to re-render it without re-running)."""
        names = list(data["workloads"])
        results = []
        for backend, entry in data["backends"].items():
            result = BackendResult(backend, error=entry.get("error"), notes=entry.get("notes", []),
                                   peak_rss=entry.get("peak_rss_bytes", []))
            for name, w in entry["workloads"].items():
                if w.get("samples"):
                    result.samples[name] = list(w["samples"])
                if w.get("na"):
                    result.na.add(name)
                if w.get("error"):
                    result.failures[name] = w["error"]
            results.append(result)
        meta = data["meta"]
        return cls(results, names, data["baseline"], Sizes(float(meta.get("scale", 1.0))), meta)

    # -- tables ------------------------------------------------------------------------------

    def _cell(self, result: BackendResult, name: str) -> Any:
        from rich.text import Text
        if result.error:
            return Text("-", style="dim")
        if name in result.na:
            return Text("n/a", style="dim")
        st = result.stats(name)
        if st is None:
            return Text("failed" if name in result.failures else "-", style="red")
        text = Text(fmt(st[0], _BY_NAME[name].unit))
        ratio = self.ratio(result.backend, self.baseline, name)
        if ratio is not None and result.backend != self.baseline:
            text.append(f" ×{fmt_ratio(ratio)}", style="red" if ratio > 1.5 else
                        "green" if ratio < 0.67 else "")
        if len(result.samples[name]) > 1:
            text.append(f"\n{fmt(st[1], _BY_NAME[name].unit)}–{fmt(st[2], _BY_NAME[name].unit)}",
                        style="dim")
        return text

    def tables(self) -> list[Any]:
        """The rich renderables: the main table, the facade table (if any), the notes."""
        from rich.table import Table
        from rich.text import Text
        main = Table(title=f"unipar bench: median, ×ratio to {self.baseline}, min–max "
                     f"(scale {self.sizes.scale:g}, {self.meta.get('repeat')} repeats)")
        main.add_column("workload", no_wrap=True)
        for r in self.results:
            main.add_column(r.backend + (" (error)" if r.error else ""), justify="right")
        for name in self.names:
            main.add_row(self.label(name), *[self._cell(r, name) for r in self.results])
        out: list[Any] = [main]
        pairs = self._facade_pairs()
        if pairs:
            facade = Table(title="facade overhead: unipar on an engine ÷ the same code written "
                           "directly for it (1.0 = no overhead)")
            facade.add_column("workload", no_wrap=True)
            for a, b in pairs:
                facade.add_column(f"{a} ÷ {b}", justify="right")
            for name in self.names:
                cells = [self.ratio(a, b, name) for a, b in pairs]
                facade.add_row(self.label(name), *[f"{c:.2f}" if c is not None else "n/a"
                                                   for c in cells])
            facade.add_row(GEOMEAN_LABEL, *self._geomeans(pairs), style="bold")
            out.append(facade)
        for r in self.results:
            if r.error:
                out.append(Text(f"{r.backend}: did not run: {r.error}", style="red"))
            for name, msg in r.failures.items():
                out.append(Text(f"{r.backend} / {name}: {msg}", style="yellow"))
            for note in r.notes:
                out.append(Text(f"{r.backend}: {note}", style="yellow"))
        return out

    def _has_data(self, backend: str) -> bool:
        r = self.by_name(backend)
        return bool(r and not r.error and r.samples)

    # -- markdown ----------------------------------------------------------------------------

    def to_markdown(self) -> str:
        """The tables as GitHub Markdown (median, ×ratio to the baseline; the facade ratios),
        for pasting into docs/performance.md."""
        lines = [f"Median of {self.meta.get('repeat')} repeats at scale {self.sizes.scale:g}; "
                 f"×N is the ratio to `{self.baseline}` (lower is faster).", "",
                 "| workload | " + " | ".join(r.backend for r in self.results) + " |",
                 "|---|" + "---:|" * len(self.results)]
        for name in self.names:
            cells = [self._cell(r, name).plain.split("\n")[0] for r in self.results]
            lines.append(f"| {self.label(name)} | " + " | ".join(cells) + " |")
        pairs = self._facade_pairs()
        if pairs:
            lines += ["", "Facade overhead (unipar on an engine ÷ the same code written directly "
                      "for it; 1.00 = none):", "",
                      "| workload | " + " | ".join(f"{a} ÷ {b}" for a, b in pairs) + " |",
                      "|---|" + "---:|" * len(pairs)]
            for name in self.names:
                cells = [self.ratio(a, b, name) for a, b in pairs]
                lines.append(f"| {self.label(name)} | " + " | ".join(
                    f"{c:.2f}" if c is not None else "n/a" for c in cells) + " |")
            lines.append(f"| **{GEOMEAN_LABEL}** | " + " | ".join(
                f"**{g}**" for g in self._geomeans(pairs)) + " |")
        errors = [f"- `{r.backend}` did not run: {r.error}" for r in self.results if r.error]
        errors += [f"- `{r.backend}`: {note}" for r in self.results for note in r.notes]
        errors += [f"- `{r.backend}` / `{name}` failed: {msg}" for r in self.results
                   for name, msg in r.failures.items()]
        return "\n".join(lines + ([""] + errors if errors else [])) + "\n"

    # -- plot --------------------------------------------------------------------------------

    def plot(self, path: str) -> None:
        """Write a PNG: one horizontal bar chart per workload, backends in the same order and
        colours everywhere (a plain engine is hatched in its engine's colour)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pairs = self._facade_pairs()
        cols = 3
        panels = len(self.names) + (1 if pairs else 0)
        rows = math.ceil(panels / cols)
        height = 0.32 * len(self.results) + 1.1
        fig, axes = plt.subplots(rows, cols, figsize=(16, rows * height + 1.2), squeeze=False)
        for ax, name in zip(axes.flat, self.names):
            self._plot_one(ax, name)
        if pairs:
            self._plot_facade(list(axes.flat)[len(self.names)], pairs)
        for ax in list(axes.flat)[panels:]:
            ax.axis("off")
        fig.suptitle(f"unipar bench — {self.meta.get('date', '')[:16].replace('T', ' ')} UTC, "
                     f"{self.meta.get('cpus')} CPUs, scale {self.sizes.scale:g}, "
                     f"median of {self.meta.get('repeat')} (whiskers: min–max); shorter is "
                     "better", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def _geomeans(self, pairs: list[tuple[str, str]]) -> list[str]:
        summaries = [self.facade_summary(a, b) for a, b in pairs]
        return [f"{g[0]:.2f}" if g else "n/a" for g in summaries]

    def _facade_pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in FACADE_PAIRS if self._has_data(a) and self._has_data(b)]

    def facade_summary(self, a: str, b: str) -> tuple[float, float, float] | None:
        """(geometric mean, min, max) over workloads of the ratio ``a`` / ``b``, skipping the
        serial-Python workload, which does not touch the engine."""
        ratios = [r for n in self.names if n != "tutorial_serial"
                  if (r := self.ratio(a, b, n)) is not None and r > 0]
        if not ratios:
            return None
        return math.exp(statistics.fmean(math.log(r) for r in ratios)), min(ratios), max(ratios)

    def _plot_facade(self, ax: Any, pairs: list[tuple[str, str]]) -> None:
        ys = list(range(len(pairs)))[::-1]
        for y, (a, b) in zip(ys, pairs):
            summary = self.facade_summary(a, b)
            if summary is None:
                continue
            mean, low, high = summary
            ax.barh(y, mean - 1.0, left=1.0, height=0.5, color=_COLOURS.get(a, "#2ca02c"),
                    xerr=[[mean - low], [high - mean]], capsize=2, edgecolor="black",
                    linewidth=0.4)
            ax.text(high, y, f" ×{fmt_ratio(mean)}", va="center", fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        spans = [max(g[2], 1 / g[1]) for a, b in pairs if (g := self.facade_summary(a, b))]
        limit = max([2.0, *spans]) * 1.6
        ax.set_xlim(1 / limit, limit)
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
                 if 1 / limit <= t <= limit]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(-0.7, len(pairs) - 0.3)
        ax.set_yticks(ys, [f"{a} ÷ {b}" for a, b in pairs], fontsize=8)
        ax.set_title("facade overhead: geometric mean over workloads\n(whiskers: min–max "
                     "workload; 1 = no overhead)", fontsize=9.5)
        ax.set_xlabel("unipar on the engine ÷ plain engine", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)

    def _plot_one(self, ax: Any, name: str) -> None:
        unit = _BY_NAME[name].unit
        ys = list(range(len(self.results)))[::-1]
        medians: list[float] = []
        tops: list[float] = []
        for y, r in zip(ys, self.results):
            st = None if r.error else r.stats(name)
            engine = r.backend.removesuffix("-plain")
            if st is None:
                why = ("error" if r.error else "n/a" if name in r.na else "failed")
                ax.text(0.02, y, why, va="center", fontsize=8, color="grey", style="italic",
                        transform=ax.get_yaxis_transform())
                continue
            medians.append(st[0])
            tops.append(st[2])
            ax.barh(y, st[0], xerr=[[st[0] - st[1]], [st[2] - st[0]]], capsize=2,
                    color=_COLOURS.get(engine, "#2ca02c"), alpha=0.55 if r.backend != engine else 0.9,
                    hatch="//" if r.backend != engine else None, edgecolor="black", linewidth=0.4)
            ax.text(st[2], y, " " + fmt(st[0], unit), va="center", fontsize=8)
        ax.set_yticks(ys, [r.backend for r in self.results], fontsize=8)
        ax.set_title(self.label(name), fontsize=9.5)
        ax.set_xlabel("MB" if unit == "MB" else "seconds", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        if medians and min(medians) > 0 and max(medians) / min(medians) > LOG_SPAN:
            ax.set_xscale("log")
            ax.set_xlim(min(medians) / 2, max(tops) * 8)   # room for the value labels
        elif medians:
            ax.set_xlim(0, max(tops) * 1.4)
        ax.grid(axis="x", alpha=0.3)
