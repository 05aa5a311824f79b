"""Pictures of a model and of its hardware, as PNG files: the optional extra ``qsd-fpga[plots]`` (matplotlib).

Two layers, so that what is drawn can be checked as numbers:

- data functions (no matplotlib): each takes what a report prints (``inspect``'s layers and program, an
  ``estimate`` report, a build's ``report.json``) or the golden model's tensors, and returns the rows drawn;
- drawing functions: one PNG each, with matplotlib's object API on its Agg canvas (``matplotlib.figure.Figure``,
  no pyplot and no global state), imported only when a picture is drawn.

=========================  ===================================================================================
``firing_rates.png``       the fraction of each neuron layer's outputs that are non-zero, per time step
``synaptic_ops.png``       dense versus effective (event-driven) synaptic operations per layer (log scale)
``cycles.png``             cycles per layer: the overlay program's descriptors
``resources.png``          LUT4, FF, DP16KD, MULT18X18D (and distributed RAM): used (nextpnr), estimated, as a
                           percentage of what the device has
=========================  ===================================================================================

Without matplotlib :func:`require` raises :class:`~compiler.errors.UserError` with :data:`MISSING`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..ir import golden
from ..ir import ops as ir

#: The refusal when matplotlib is not installed (the CLI's ``error:`` line, exit status 2).
MISSING = "plots need matplotlib: pip install 'qsd-fpga[plots]'"

FIRING, SYNOPS, CYCLES, RESOURCES = "firing_rates.png", "synaptic_ops.png", "cycles.png", "resources.png"
#: Every file a set of plots may hold, in the order they are written.
FILES = (FIRING, SYNOPS, CYCLES, RESOURCES)
#: What each shows, as the alternative text of report.md's images.
CAPTIONS = {FIRING: "Firing rate per layer and time step", SYNOPS: "Dense versus effective synaptic operations "
            "per layer", CYCLES: "Cycles per layer", RESOURCES: "Resources used, estimated and available"}
#: The resources drawn (those of ``fit_totals`` that a report has), in this order.
RESOURCE_NAMES = ("LUT4", "FF", "DP16KD", "MULT18X18D", "DPR16X4")

_DPI = 110
_WIDTH = 8.0          # inches


def available() -> bool:
    """Whether matplotlib can be imported (it is, once: a fraction of a second)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """UserError (:data:`MISSING`) unless matplotlib is installed: call it before any expensive work."""
    if not available():
        raise UserError(MISSING)


def check_dir(path: str | Path, force: bool = False) -> Path:
    """The folder ``inspect --plot`` may write its PNGs into: new (its parent must exist), empty, or with
    ``force`` any folder (only the PNGs of :data:`FILES` are replaced there, nothing removed). UserError else."""
    text = str(path)
    if not text.strip():
        raise UserError("--plot is an empty path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--plot {text}: exists and is not a folder")
    if path.is_dir():
        if not force and any(path.iterdir()):
            raise UserError(f"--plot {text}: the folder is not empty; give a new or empty folder, or --force to "
                            f"write the PNGs into it (only {', '.join(FILES)} are replaced)")
    elif not path.parent.is_dir():
        raise UserError(f"--plot {text}: its parent folder {path.parent} does not exist")
    return path


# ---------------------------------------------------------------- data: what is drawn, as numbers

@dataclass
class FiringRates:
    """Per neuron layer (IR ``Neuron`` op, program order): ``rates[k][t]``, the fraction of its outputs at time
    step ``t`` that are non-zero (a spike of any level) over the samples, and ``outputs[k]``, how many outputs
    it has per sample and step. Their weighted mean is ``1 - activation_sparsity`` (``inspect``)."""

    layers: list[str]
    rates: list[list[float]]
    outputs: list[int]
    samples: int
    levels: int

    @property
    def timesteps(self) -> int:
        return max((len(r) for r in self.rates), default=0)

    def overall(self) -> float:
        """The fraction of all neuron outputs that are non-zero: ``1 - activation_sparsity``."""
        total = sum(n * len(r) for n, r in zip(self.outputs, self.rates))
        return sum(n * sum(r) for n, r in zip(self.outputs, self.rates)) / total if total else 0.0


def firing_rates(graph: ir.Graph, x: np.ndarray) -> FiringRates:
    """The golden model's firing rates on the samples ``x`` (:class:`FiringRates`)."""
    _, env = golden.run(graph, x, trace=True)
    layers, rates, outputs = [], [], []
    for op in graph.ops:
        if not isinstance(op, ir.Neuron):
            continue
        out = env[op.dst]
        if out.ndim < 3:                             # [B, C]: no time axis
            out = out[:, None]
        steps = out.reshape(out.shape[0], out.shape[1], -1)          # [B, T, N*C]
        layers.append(op.name)
        rates.append([float(v) for v in (steps != 0).mean(axis=(0, 2))])
        outputs.append(int(steps.shape[2]))
    return FiringRates(layers, rates, outputs, int(len(x)), int(graph.meta.get("levels", 1)))


@dataclass
class LayerOps:
    name: str
    kind: str          # "MAC" or "AC"
    dense: float
    effective: float


def synaptic_ops(layers: list[dict]) -> list[LayerOps]:
    """The layers with synapses of ``inspect``'s report (``layers``: ``metrics.summarize``'s), their dense and
    effective synaptic operations per inference, as ``inspect`` prints them."""
    return [LayerOps(r["name"], r["kind"], float(r["dense_ops"]), float(r["effective_ops"]))
            for r in layers if r["kind"]]


@dataclass
class LayerCycles:
    name: str
    kind: str
    cycles: float | None     # None: a descriptor the overlay cannot run yet


@dataclass
class Cycles:
    """Cycles per layer and where they come from (``source``, for the picture's title)."""

    rows: list[LayerCycles]
    source: str
    end: float = 0.0         # the program's END descriptor: counted in the inference's cycles, not drawn

    @property
    def total(self) -> float:
        """The cycles of the rows drawn (:attr:`end` aside)."""
        return float(sum(r.cycles for r in self.rows if r.cycles is not None))


def program_cycles(program: dict) -> Cycles:
    """Cycles per descriptor of an overlay program as ``inspect --program --json`` reports it (``program``:
    ``lanes``, ``descriptors`` with ``name``, ``kind``, ``cycles``); the END descriptor is left out."""
    rows = [LayerCycles(d["name"], d["kind"], None if d["cycles"] is None else float(d["cycles"]))
            for d in program["descriptors"] if d["kind"] != "END"]
    end = sum(float(d["cycles"] or 0) for d in program["descriptors"] if d["kind"] == "END")
    return Cycles(rows, f"overlay program, {program['lanes']} lanes, cycles on the golden model's mean events per frame",
                  end)


@dataclass
class Resource:
    name: str
    available: int
    used: int | None = None         # nextpnr's count after placement (a build)
    estimated: int | None = None    # the pre-synthesis estimate


def resource_source(report: dict) -> str:
    """Where the resource figures of ``report`` (a build's or an ``estimate``'s) come from, in words."""
    what = "the overlay"
    built = "placed by nextpnr" if report.get("resources") else "estimated before synthesis"
    fits = "" if "fits" not in report else ("; fits" if report["fits"] else "; DOES NOT FIT")
    return f"{what} on the {report['board']} ({report['device']}), {report['lanes']} lanes, {built}{fits}"


def resources(report: dict) -> list[Resource]:
    """Per resource of the device (``fit_totals``): what a build's ``report.json`` says was used (nextpnr's
    ``resources``, and ``distributed_ram``) and estimated (``overlay.resources``), or an ``estimate`` report's
    estimate alone. The numbers are the report's own."""
    used = {name: u["used"] for name, u in (report.get("resources") or {}).items()}
    if report.get("distributed_ram"):
        used["DPR16X4"] = report["distributed_ram"]["used"]
    est = (report.get("overlay") or {}).get("resources") or {}
    rows = []
    for name in RESOURCE_NAMES:
        if name not in report["fit_totals"]:
            continue
        if name not in used and name not in est:
            continue
        rows.append(Resource(name, int(report["fit_totals"][name]), used.get(name), est.get(name)))
    return rows


# ---------------------------------------------------------------- drawing

def _figure(rows: int, min_height: float = 3.0):
    """A figure tall enough for ``rows`` labelled bars (matplotlib imported here, on first use)."""
    require()
    from matplotlib.figure import Figure           # the object API: no pyplot, no global state, Agg by default

    fig = Figure(figsize=(_WIDTH, max(min_height, 1.5 + 0.3 * rows)), dpi=_DPI, layout="constrained")
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _label_rows(ax, names: list[str]) -> None:
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)              # program order, top to bottom
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def draw_firing_rates(data: FiringRates, path: Path, title: str = "") -> Path:
    """Horizontal bars (one time step) or a layers x time steps heat map (several)."""
    fig = _figure(len(data.layers))
    ax = fig.add_subplot()
    head = f"Firing rate per neuron layer{' and time step' if data.timesteps > 1 else ''}"
    sub = (f"fraction of outputs that spike (any of {data.levels} level{'s' if data.levels != 1 else ''}), "
           f"mean of {data.samples} sample{'s' if data.samples != 1 else ''}; overall {data.overall():.1%}")
    if data.timesteps <= 1:
        values = [r[0] if r else 0.0 for r in data.rates]
        bars = ax.barh(range(len(values)), values, color="tab:orange")
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=2, fontsize=7)
        right = min(1.15, max(values, default=0) * 1.15 + 0.05)   # room for a label beside a bar near 1
        ax.set_xlim(0, right)
        ax.set_xticks([t for t in np.arange(0, 1.01, 0.1 if right < 0.5 else 0.2) if t <= right])
        ax.set_xlabel("firing rate (fraction of neuron outputs non-zero)")
        _label_rows(ax, data.layers)
    else:
        grid = np.full((len(data.layers), data.timesteps), np.nan)
        for k, r in enumerate(data.rates):
            grid[k, :len(r)] = r
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(np.nanmax(grid), 1e-9),
                          interpolation="nearest")
        if data.timesteps <= 16:
            for (k, t), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    r, g, b, _ = image.cmap(image.norm(v))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5     # the cell's luminance
                    ax.text(t, k, f"{v:.0%}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
        ax.set_xticks(range(data.timesteps), [str(t) for t in range(data.timesteps)], fontsize=8)
        ax.set_yticks(range(len(data.layers)), data.layers, fontsize=8)
        ax.set_xlabel("time step")
        fig.colorbar(image, ax=ax, label="firing rate (fraction of neuron outputs non-zero)", fraction=0.04,
                     pad=0.02)
    ax.set_title(f"{title}\n{head}\n{sub}" if title else f"{head}\n{sub}", fontsize=9)
    return _save(fig, path)


def draw_synaptic_ops(rows: list[LayerOps], path: Path, title: str = "") -> Path:
    """Dense and effective operations side by side per layer, on a log scale (layers span decades)."""
    fig = _figure(round(1.4 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    h = 0.38
    dense = np.array([r.dense for r in rows])
    eff = np.array([r.effective for r in rows])
    ax.barh(y - h / 2, dense, h, label="dense (every synapse)", color="tab:gray")
    bars = ax.barh(y + h / 2, eff, h, label="effective (non-zero inputs only)", color="tab:blue")
    ax.bar_label(bars, labels=[f"{e / d:.0%}" if d else "" for d, e in zip(dense, eff)], padding=2, fontsize=7)
    ax.set_xscale("log")
    positive = np.concatenate([dense[dense > 0], eff[eff > 0]])
    if positive.size:
        ax.set_xlim(10 ** math.floor(math.log10(positive.min())), 10 ** (math.log10(positive.max()) + 0.6))
    ax.set_xlabel("synaptic operations per inference (log scale)")
    _label_rows(ax, [f"{r.name} ({r.kind})" for r in rows])
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    total_d, total_e = dense.sum(), eff.sum()
    head = (f"Synaptic operations per layer: dense {total_d:,.0f}, effective {total_e:,.0f} "
            f"({total_e / total_d if total_d else 0:.1%} of dense); labels: effective / dense")
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=9)
    return _save(fig, path)


def draw_cycles(data: Cycles, path: Path, title: str = "") -> Path:
    """Cycles per layer, horizontal bars (linear: where the time goes); a layer without a figure is marked."""
    fig = _figure(len(data.rows))
    ax = fig.add_subplot()
    values = [r.cycles or 0.0 for r in data.rows]
    total = data.total + data.end                    # the percentages are of the whole inference
    bars = ax.barh(range(len(values)), values, color="tab:green")
    ax.bar_label(bars, labels=[("cannot run yet" if r.cycles is None else
                                f"{r.cycles:,.0f} ({r.cycles / total:.0%})" if total else f"{r.cycles:,.0f}")
                               for r in data.rows], padding=2, fontsize=7)
    ax.set_xlim(0, max(values, default=1) * 1.25 or 1)
    ax.set_xlabel("clock cycles per inference")
    _label_rows(ax, [f"{r.name} ({r.kind.lower()})" if r.kind else r.name for r in data.rows])
    missing = sum(r.cycles is None for r in data.rows)
    what = "Estimated cycles" if data.source.startswith("estimate") else "Cycles"
    head = (f"{what} per layer: {total:,.0f} per inference"
            + (f" without {missing} layers" if missing else "")
            + (f" ({data.end:,.0f} of them in the END descriptor, not drawn)" if data.end else "")
            + f"\n{data.source}")
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=9)
    return _save(fig, path)


def draw_resources(rows: list[Resource], path: Path, title: str = "", source: str = "") -> Path:
    """Used and estimated counts as a percentage of the device's, labelled with the counts themselves (the
    resources differ by three decades, their shares do not)."""
    fig = _figure(0, min_height=3.8)
    ax = fig.add_subplot()
    series = [(label, attr, color) for label, attr, color in
              (("used (nextpnr)", "used", "tab:blue"), ("estimated", "estimated", "tab:orange"))
              if any(getattr(r, attr) is not None for r in rows)]
    x = np.arange(len(rows))
    width = 0.8 / max(len(series), 1)
    top = 100.0
    for k, (label, attr, color) in enumerate(series):
        counts = [getattr(r, attr) for r in rows]
        share = [100.0 * c / r.available if c is not None and r.available else 0.0 for c, r in zip(counts, rows)]
        top = max(top, *share)
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, share, width, label=label, color=color)
        ax.bar_label(bars, labels=["" if c is None else f"{c:,}" for c in counts], padding=2, fontsize=7,
                     rotation=90 if len(series) > 1 else 0)
    ax.axhline(100, color="tab:red", linewidth=1, linestyle="--", label="available (100%)")
    ax.set_xticks(x, [f"{r.name}\nof {r.available:,}" for r in rows], fontsize=8)
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("% of the device's total")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)
    head = "Resources used / estimated / available (labels: counts)" + (f"\n{source}" if source else "")
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------- sets of plots

def write(folder: str | Path, *, title: str = "", firing: FiringRates | None = None,
          ops: list[LayerOps] | None = None, cycles: Cycles | None = None,
          resource_rows: list[Resource] | None = None, resource_source: str = "") -> list[Path]:
    """Draw every picture whose data is given into ``folder`` (created if need be); the files written, in the
    order of :data:`FILES`."""
    require()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if firing is not None and firing.layers:
        written.append(draw_firing_rates(firing, folder / FIRING, title))
    if ops:
        written.append(draw_synaptic_ops(ops, folder / SYNOPS, title))
    if cycles is not None and cycles.rows:
        written.append(draw_cycles(cycles, folder / CYCLES, title))
    if resource_rows:
        written.append(draw_resources(resource_rows, folder / RESOURCES, title, resource_source))
    return written


def for_model(folder: str | Path, model: str | Path, graph: ir.Graph, x: np.ndarray, *, board: str, lanes: int,
              layers: list[dict] | None = None, program: dict | None = None, title: str = "") -> dict:
    """``inspect --plot``'s pictures of ``model`` (its lowered ``graph``) in ``folder``: the firing rates and
    synaptic operations on the samples ``x`` (``layers``: ``inspect``'s, computed when not given), the cycles
    of its overlay program at ``lanes`` (``program``: ``inspect --program``'s, compiled when not given) and the
    overlay's ``estimate`` of its resources on ``board``. A picture that the model cannot have (no hardware runs it yet)
    is skipped with its reason. ``{"dir", "board", "files", "skipped"}`` (``board``: the one estimated)."""
    from dataclasses import asdict

    from . import estimate as estimate_flow
    from ..hw.overlay_config import standard_post_lanes
    from ..hw.program import compile_program, fit_config
    from ..ir import metrics

    require()
    skipped = []
    if layers is None:
        layers = [asdict(r) for r in metrics.layer_stats(graph, x)[0]]
    if program is None:
        try:
            compiled = compile_program(graph, fit_config(graph, lanes, post_lanes=standard_post_lanes(lanes)))
        except UserError as exc:
            skipped.append({"plot": CYCLES, "reason": str(exc)})
        else:
            cycles = compiled.cycles(compiled.events(x))
            program = {"lanes": lanes, "descriptors": [{"name": d.name, "kind": d.kind.name, "cycles": c}
                                                       for d, c in zip(compiled.descriptors, cycles)]}
    try:
        est, _ = estimate_flow.run(model, board)
    except UserError as exc:
        est = None
        skipped.append({"plot": RESOURCES, "reason": str(exc)})
    else:
        if not est["fits"]:
            skipped.append({"plot": RESOURCES, "reason": est["refusal"]})
            est = None
    files = write(folder, title=title, firing=firing_rates(graph, x), ops=synaptic_ops(layers),
                  cycles=None if program is None else program_cycles(program),
                  resource_rows=None if est is None else resources(est),
                  resource_source="" if est is None else resource_source(est))
    return {"dir": str(folder), "board": None if est is None else est["board"], "files": [str(f) for f in files],
            "skipped": skipped}


def for_build(folder: Path, report: dict, graph: ir.Graph, x: np.ndarray, cycles: Cycles) -> dict:
    """The plots of a build (either flow) in its staging ``folder``, for its ``report.json``'s ``plots``:
    ``files`` (names in the folder) and ``note`` (why there are none: matplotlib missing, or a drawing that
    failed; the build is not lost for a picture)."""
    if not available():
        return {"files": [], "note": MISSING}
    from ..ir import metrics

    title = f"{report['model']} on the {report['board']} ({report['device']}), {report['lanes']} lanes"
    try:
        rows, _ = metrics.layer_stats(graph, x)
        ops = [LayerOps(r.name, r.kind, float(r.dense_ops), float(r.effective_ops)) for r in rows if r.kind]
        files = write(folder, title=title, firing=firing_rates(graph, x), ops=ops, cycles=cycles,
                      resource_rows=resources(report), resource_source=resource_source(report))
    except Exception as exc:                        # noqa: BLE001 - a picture must not cost the bitstream
        return {"files": [], "note": f"the plots failed: {type(exc).__name__}: {exc}"}
    return {"files": [p.name for p in files], "note": None}


def markdown(plots: dict | None) -> list[str]:
    """report.md's ``## Plots`` section for a report's ``plots`` (nothing for a report without the key)."""
    if plots is None:
        return []
    lines = ["## Plots", ""]
    if plots["files"]:
        lines += [f"![{CAPTIONS.get(name, name)}]({name})\n" for name in plots["files"]]
    else:
        lines += [f"No plots: {plots['note']}.", ""]
    return lines
