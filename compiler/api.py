"""The Python API (``docs/api.md``): what the commands do, as functions for scripts and notebooks.

Each function is a thin wrapper over the flows (:mod:`compiler.flows`) and the frontend, as the CLI's command
of the same name, and checks its arguments by the same rules with the same messages: a refusal is a
:class:`~compiler.errors.UserError` whose text is the CLI's ``error:`` line. ``import compiler`` loads this
module only when one of its names is first used (``compiler.load``...), so ``import compiler.ir`` stays light.

==================  =====================================================================================
:func:`load`        a checkpoint -> :class:`Model`
:func:`samples`     inputs (and labels) from the model's dataset or ``.npy`` files, as ``--dataset``/``--inputs``
:func:`lower`       a model -> :class:`Lowered`, the integer program that the golden model executes
:func:`predict`     classes (or integer logits) from the golden model
:func:`estimate`    resources, cycles and fit on a board before synthesis, as ``estimate`` -> :class:`Report`
:func:`simulate`    the overlay and the model's program cycle by cycle against the golden model, as ``simulate``
:func:`build`       a bitstream and its report, as ``build``
:func:`plot`        PNGs of firing rates, synaptic operations, cycles and resources, as ``inspect --plot``
:func:`load_report` a build's ``report.json``
==================  =====================================================================================
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from boards.errors import BoardError

from . import __version__
from .errors import UserError
from .flows import SCHEMA_VERSION
from .flows import build as build_flow
from .flows import estimate as estimate_flow
from .flows import run as run_flow
from .flows import simulate as simulate_flow
from .flows.samples import load_samples
from .frontend.config import ModelConfig
from .frontend.data import check_inputs
from .hw.program import model_id
from .ir import golden

__all__ = ["Model", "Lowered", "Report", "UserError", "load", "samples", "lower", "predict", "estimate", "simulate",
           "build", "plot", "load_report", "__version__"]

F = TypeVar("F", bound=Callable[..., Any])


def _refusals(f: F) -> F:
    """A board's refusal (:class:`boards.errors.BoardError`) raised as the one :class:`UserError` type."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except BoardError as exc:
            raise UserError(str(exc)) from None
    return wrapper  # type: ignore[return-value]


def _at_least(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``; else the CLI's refusal of the flag."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be at least {minimum}, not {value}")
    return int(value)


def _placement_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**31:
        raise UserError(f"--seed must be in 0..2147483647, not {value!r}")      # nextpnr's --seed is a C int
    return int(value)


# ---------------------------------------------------------------- the objects

@dataclass(frozen=True, repr=False)
class Model:
    """A trained model, loaded by :func:`load`.

    Attributes
    ----------
    path: the checkpoint file.
    module: the PyTorch module (:class:`compiler.frontend.model.QSDTransformer`), in eval mode.
    """

    path: Path
    module: Any

    @property
    def config(self) -> ModelConfig:
        return self.module.cfg

    @property
    def dataset(self) -> str | None:
        """The dataset it was trained on, if the checkpoint says."""
        return self.module.dataset

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def __repr__(self) -> str:
        c = self.config.to_dict()
        arch = c.get("arch", "flat")
        shape = "x".join(map(str, self.config.input_shape()))
        width = (f"dim {c['dim']}, depth {c['depth']}" if arch == "flat"
                 else f"{arch}, dims {tuple(c['dims'])}, depths {tuple(c['depths'])}")
        trained = f", trained on {self.dataset}" if self.dataset else ""
        return (f"Model({str(self.path)!r}: {c['input']} {shape}, {c['classes']} classes, {width}, {c['heads']} heads, "
                f"{c['attention']} attention, {c['bits']}-bit weights, D={c['levels']}, T={c['timesteps']}, "
                f"{self.parameters:,} parameters{trained})")


@dataclass(frozen=True, repr=False)
class Lowered:
    """A model lowered to the integer IR by :func:`lower`: the program the golden model executes and the
    hardware implements bit for bit (``docs/semantics.md``).

    Attributes
    ----------
    graph: the IR (:class:`compiler.ir.Graph`; its ops carry the integer weights).
    config: the model's configuration (the input it takes).
    source: the checkpoint it came from.
    """

    graph: Any
    config: ModelConfig
    source: str

    @property
    def ops(self) -> list[str]:
        """The names of the IR's ops, in program order."""
        return [op.name for op in self.graph.ops]

    @property
    def model_id(self) -> str:
        """The 32-bit id of the integer program, as the hardware reports it (``model_id`` in the reports)."""
        return f"{model_id(self.graph):08x}"

    def __repr__(self) -> str:
        t = self.graph.input_type
        return (f"Lowered({self.source!r}: {len(self.graph.ops)} integer ops, {self.graph.input_kind} input "
                f"{tuple(t.shape)} -> {self.config.classes} logits, model id {self.model_id})")


class Report(dict):
    """A command's report: the dict its ``--json`` prints (``schema_version`` first; ``docs/cli.md``,
    ``docs/build.md`` list the keys), whose repr is one line of its main figures."""

    def __init__(self, kind: str, data: dict, summary: Callable[[dict], str]):
        super().__init__({"schema_version": SCHEMA_VERSION, **data})
        self.kind = kind
        self._summary = summary

    def summary(self) -> str:
        try:
            return self._summary(self)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return "(figures missing)"

    def __repr__(self) -> str:
        return f"<{self.kind} report: {self.summary()}; a dict of {len(self)} keys>"

    def _repr_pretty_(self, p, cycle) -> None:          # IPython / Jupyter
        p.text(repr(self))


def _lanes_text(r: dict) -> str:
    return f"{r['lanes']} lane{'s' if r['lanes'] != 1 else ''}"


def _estimate_summary(r: dict) -> str:
    if not r["fits"]:
        return f"{r['board']} ({r['device']}): DOES NOT FIT the overlay: {r['refusal']}"
    ov = r["overlay"]
    used = ", ".join(f"{k} {v:,}/{r['fit_totals'][k]:,}" for k, v in ov["resources"].items() if k in r["fit_totals"])
    return (f"{r['board']} ({r['device']}), the overlay {ov['config_hash']}, {_lanes_text(r)}: fits; {used}; "
            f"{r['cycles_per_inference']:,.0f} cycles per inference")


def _simulate_summary(r: dict) -> str:
    verdict = "bit-exact" if r["mismatches"] == 0 else f"{r['mismatches']} MISMATCHING"
    return (f"{r['samples']} sample{'s' if r['samples'] != 1 else ''} in {r['simulator']}, {_lanes_text(r)} {r['schedule']}: {verdict}; "
            f"{r['cycles_per_inference']:,.0f} cycles per inference, {r['ops_per_cycle']:.2f} synaptic ops per cycle")


def _build_summary(r: dict) -> str:
    met = "met" if r["timing_met"] else "NOT met"
    return (f"{r['board']} ({r['device']}), the overlay {r['overlay']['config_hash']}: Fmax {r['fmax_mhz']:.1f} MHz "
            f"(target {r['clock_mhz']:g} MHz {met}), {r['cycles_per_inference']:,.0f} cycles = "
            f"{r['latency_us']:.1f} us; bitstream {r['bitstream']}")


# ---------------------------------------------------------------- the functions

def _refuse_generator(generator: bool) -> None:
    """The CLI's ``--generator``, refused: ``overlay=True`` is accepted (it chose the overlay once), the
    one-engine-per-layer generator is gone."""
    if generator:
        raise UserError("generator=True: the one-engine-per-layer generator was removed (the overlay runs every "
                        "model it ran, bit-exact and faster): drop it")


def load(path: str | Path) -> Model:
    """Load a checkpoint (``model.pt``) written by ``train``; anything else is refused, never unpickled."""
    from .frontend import checkpoint                 # deferred: torch takes seconds to import

    return Model(Path(path), checkpoint.load(path))


def _model(model: Any) -> Model:
    if not isinstance(model, Model):
        raise UserError(f"model must be a compiler.Model (from compiler.load), not {type(model).__name__}")
    return model


def samples(model: Model, *, dataset: str | None = None, split: str = "test", count: int | None = None,
            inputs: str | Path | None = None, labels: str | Path | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)``: the first ``count`` samples of a dataset split (default: the one the model was trained on),
    or of the ``.npy`` files ``inputs`` and ``labels`` (``y`` None without labels), checked against the model
    as ``--dataset``/``--inputs``/``--labels``/``--count`` are."""
    if count is not None:
        count = _at_least("--count", count)
    x, y, _ = load_samples(_model(model).module, inputs=None if inputs is None else str(inputs),
                           labels=None if labels is None else str(labels), dataset=dataset, split=split,
                           count=count)
    return x, y


def lower(model: Model) -> Lowered:
    """The model as an integer program: the frontend, then every lowering pass (the checker between them)."""
    from .flows.lower import lower as lower_flow      # deferred: the frontend imports torch (seconds)

    model = _model(model)
    return Lowered(lower_flow(model.module, str(model.path)), model.config, str(model.path))


def _lowered(model: Model | Lowered) -> Lowered:
    if isinstance(model, Lowered):
        return model
    if isinstance(model, Model):
        return lower(model)
    raise UserError(f"expected a compiler.Model or compiler.Lowered, not {type(model).__name__}")


def predict(model: Model | Lowered, x: np.ndarray, *, logits: bool = False) -> np.ndarray:
    """The integer golden model's classes for ``x`` (``[N]`` int64), or with ``logits`` its integer logits
    (``[N, classes]``). ``x`` is checked as ``--inputs`` is: ``(N, C, H, W)`` uint8 pixels for an image model,
    ``(N, T, C, H, W)`` binary frames for an event model, or one sample without the batch axis."""
    lowered = _lowered(model)
    x = check_inputs(x, lowered.config, "x")
    out = golden.predict(lowered.graph, x)
    return out if logits else out.argmax(axis=1)


def _inputs(model: Model, x: np.ndarray | None, count: int | None, default_count: int) -> np.ndarray:
    if x is None:
        return samples(model, count=default_count if count is None else count)[0]
    x = check_inputs(x, model.config, "x")
    return x if count is None else x[:_at_least("--count", count)]


@_refusals
def estimate(model: Model, board: str, *, lanes: int | None = None,
             samples: int = build_flow.DEFAULT_SAMPLES, overlay: bool = False, generator: bool = False) -> Report:
    """``python -m compiler estimate``: the ``board``'s overlay for the model (its estimated resources against
    the device, how full its memories are), the program's cycles per inference and per descriptor and whether
    it fits, before any synthesis (``docs/cli.md``). ``lanes`` None: the board's standard; ``samples``: test
    inputs whose activity drives the cycles. ``overlay`` is accepted and changes nothing."""
    model = _model(model)
    samples = _at_least("--samples", samples)
    _refuse_generator(generator)
    report, _ = estimate_flow.run(model.path, board, lanes, samples=samples)
    return Report("estimate", report, _estimate_summary)


@_refusals
def simulate(model: Model, x: np.ndarray | None = None, *, count: int | None = None, lanes: int | None = None,
             dense: bool = False, simulator: str = "verilator", trace: bool = False,
             build_dir: str | Path = "build/sim", progress: bool = False, overlay: bool = False,
             generator: bool = False, post_lanes: int | None = None, weight_store: int | None = None,
             param_store: int | None = None) -> Report:
    """``python -m compiler simulate``: the overlay running the model's program, cycle by cycle, through the
    host driver, on ``x`` (default: the first ``count``, default 16, test samples of the model's dataset),
    compared bit for bit with the golden model. ``report["mismatches"]`` is 0 when every sample matches.
    Verilator builds a design once (about a minute) and caches it in ``build_dir``. ``lanes`` default 16;
    ``post_lanes``, ``weight_store`` and ``param_store`` as the command's ``--post-lanes``, ``--weight-store``
    and ``--param-store`` (a store too small for the model streams from the SDRAM, simulated as LiteDRAM on
    the chip's model); ``simulator="icarus"``: Icarus Verilog in a cocotb bench driving the same host driver;
    ``dense``: the dense program (every lane an event, the same results), the event-driven schedule's baseline.
    ``overlay`` is accepted and changes nothing."""
    model = _model(model)
    if simulator not in simulate_flow.SIMULATORS:
        raise UserError(f"simulator must be one of {', '.join(simulate_flow.SIMULATORS)}, not {simulator!r}")
    _refuse_generator(generator)
    for name, value in (("post_lanes", post_lanes), ("weight_store", weight_store), ("param_store", param_store)):
        if value is not None:
            _at_least(name, value)
    simulate_flow.check_simulator(simulator, trace=trace, weight_store=weight_store)
    if param_store is not None and weight_store is None:
        raise UserError("param_store is the streaming overlay's: add weight_store")
    simulate_flow.check_build_dir(build_dir)
    x = _inputs(model, x, count, 16)
    report = simulate_flow.run(lower(model).graph, x, lanes=_at_least("lanes", lanes or 16), trace=trace,
                                       build_dir=str(build_dir), show_progress=progress,
                                       post_lanes=post_lanes, weight_store=weight_store,
                                       param_store=param_store, simulator=simulator, dense=dense)
    report["model"] = str(model.path)
    return Report("simulate", report, _simulate_summary)


@_refusals
def build(model: Model, board: str, *, out: str | Path | None = None, lanes: int | None = None,
          clock_mhz: float | None = None, baud: int = build_flow.DEFAULT_BAUD, seed: int = 1,
          samples: int = build_flow.DEFAULT_SAMPLES, force: bool = False, progress: bool = False,
          overlay: bool = False, generator: bool = False, standalone: bool = False,
          cache: str | Path | None = None) -> Report:
    """``python -m compiler build``: the board's overlay and the model's program, with its report
    (``docs/build.md``), in ``out`` (default ``build/<model>-<board>``): the bitstream is built once per
    configuration (minutes: synthesis, place and route on the YoWASP tools) and cached in ``cache``; a later
    model that fits it takes seconds. ``standalone`` as ``--standalone``. ``clock_mhz`` None: the command's
    default. ``overlay`` is accepted and changes nothing."""
    from .flows import overlay as overlay_flow

    model = _model(model)
    _refuse_generator(generator)
    config = overlay_flow.OverlayBuildConfig(
        model=model.path, board=board, out=None if out is None else Path(out),
        lanes=None if lanes is None else _at_least("--lanes", lanes),
        clock_mhz=None if clock_mhz is None else float(clock_mhz),
        baud=_at_least("--baud", baud), seed=_placement_seed(seed), samples=_at_least("--samples", samples),
        progress=progress, force=force, standalone=standalone, cache=None if cache is None else Path(cache))
    report, _ = overlay_flow.run(config)
    return Report("build", report, _build_summary)


def _export_summary(r: dict) -> str:
    what = f"the overlay {r['overlay']['config_hash']} ({r['lanes']} lanes) with the model's program"
    return f"{what} for {r['board']} in {r['out']}: {', '.join(f['name'] for f in r['files'])}"


@_refusals
def export(model: Model, board: str, out: str | Path, *, overlay: bool = False, generator: bool = False,
           lanes: int | None = None, clock_mhz: float | None = None, baud: int = build_flow.DEFAULT_BAUD,
           force: bool = False) -> Report:
    """``python -m compiler export``: the design a board gets, as files in ``out`` (a new or empty folder, any
    with ``force``), without the tools: the board's standard overlay configuration's top with the model's
    program (``program.npz``, ``program.txt``) (``lanes`` None: the board's standard): RTLIL, Verilog, constraints,
    tool scripts and ``report.json`` (``docs/cli.md``). Seconds. ``clock_mhz`` None: the build's default.
    ``overlay`` is accepted and changes nothing."""
    from .flows import export as export_flow

    model = _model(model)
    _refuse_generator(generator)
    lanes = None if lanes is None else _at_least("--lanes", lanes)
    baud = _at_least("--baud", baud)
    report, _ = export_flow.run(model.path, board, out, lanes=lanes, clock_mhz=clock_mhz, baud=baud,
                                        force=force)
    return Report("export", report, _export_summary)


def _plots_summary(r: dict) -> str:
    drawn = ", ".join(Path(f).name for f in r["files"]) or "none"
    missed = "".join(f"; {s['plot']} not drawn" for s in r["skipped"])
    return f"{len(r['files'])} PNGs in {r['dir']}: {drawn}{missed}"


@_refusals
def plot(model: Model, out: str | Path, x: np.ndarray | None = None, *, count: int | None = None,
         board: str = "ulx3s", lanes: int = 16, force: bool = False) -> Report:
    """``python -m compiler inspect --plot OUT``: PNGs of the firing rate per layer and time step, dense versus
    effective synaptic operations per layer (the golden model on ``x``, default the first ``count``, default
    64, test samples), the overlay program's cycles per layer at ``lanes`` and the estimate's resources on
    ``board`` (:mod:`compiler.flows.plots`). ``out``: a new or empty folder (any with ``force``). Needs the ``plots``
    extra (matplotlib). The report: ``dir``, ``board``, ``files`` (the PNGs' paths), ``skipped``."""
    from boards import get_board

    from .flows import plots

    model = _model(model)
    plots.require()
    plots.check_dir(out, force)
    get_board(board)
    if _at_least("--lanes", lanes) > 256:
        raise UserError(f"--lanes must be an integer from 1 to 256, not {lanes}")
    x = _inputs(model, x, count, 64)
    result = plots.for_model(out, model.path, lower(model).graph, x, board=board, lanes=lanes,
                             title=f"{model.path} ({len(x)} samples)")
    return Report("plot", result, _plots_summary)


def load_report(path: str | Path) -> Report:
    """A build's ``report.json`` (its folder or the file), checked as ``flash`` and ``run`` check it."""
    path = Path(path)
    report = run_flow.read_build_report(path / "report.json" if path.is_dir() else path)
    return Report("build", report, _build_summary)
