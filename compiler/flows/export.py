"""``python -m compiler export``: the design a board gets, as files, without running the tools.

``build``'s own steps up to the program (:mod:`compiler.flows.overlay`): the board and the clock checked, the
model loaded, lowered and compiled into the program of the board's standard overlay configuration (refused,
one line and nothing written, if it does not fit), the board top (PLL, overlay, UART bridge, LEDs) written by
Amaranth's platform as RTLIL with the tools' scripts and constraints (:func:`boards.build.prepare`), that RTLIL
as Verilog by the Yosys script the simulators use (:func:`sim.verilog.from_rtlil`), the model's program (its
images ``program.npz``, what ``run`` loads, and its listing ``program.txt``) and ``report.json``. The
overlay's design is the same for every model that fits it: the model is data. The files appear in the output
folder only once all of them are written (a staging folder beside it is renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from sim import verilog

from ..errors import UserError
from . import SCHEMA_VERSION, build

#: Amaranth's placeholder for debug Verilog (generation disabled): left out, beside the real ``top.v``.
_LEFT_OUT = ("top.debug.v",)


def check_out(out: Path, force: bool) -> None:
    """UserError unless ``out`` may take the export: a new or empty folder, or with ``force`` any folder that
    is not the working folder or one above it."""
    here = Path.cwd().resolve()
    where = out.resolve()
    if where == here or where in here.parents:
        raise UserError(f"--out {out}: an export replaces its output folder, and this one holds the working "
                        f"folder; give a folder of the export's own")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: exists and is not empty; give another --out, or --force to replace it")


def _verilog(staging: Path) -> None:
    """``top.v`` from ``top.il`` in ``staging``, and Amaranth's placeholders left out."""
    try:
        text = verilog.from_rtlil((staging / "top.il").read_text())
    except RuntimeError as exc:
        raise UserError(f"cannot write the Verilog: {str(exc).strip().splitlines()[0]}") from None
    (staging / "top.v").write_text(text)
    for name in _LEFT_OUT:
        (staging / name).unlink(missing_ok=True)


def run(model: str | Path, board: str, out: str | Path, *, lanes: int | None = None,
        clock_mhz: float | None = None, baud: int = build.DEFAULT_BAUD, force: bool = False,
        samples: int = build.DEFAULT_SAMPLES, seed: int = 1) -> tuple[dict, int]:
    """Write the board top of ``board``'s standard overlay configuration (at ``lanes``, None: the board's
    standard) as RTLIL and Verilog with its constraints and tool scripts, ``model``'s program (``program.npz``,
    ``program.txt``) and ``report.json`` into ``out``; ``(report, 0)``. ``build``'s own steps up to the
    program; UserError (nothing written) for a model that does not fit the configuration."""
    from ..hw import overlay_config
    from . import overlay                   # deferred: the overlay's gateware is imported only when asked for

    t0 = time.monotonic()
    out = Path(out)
    if not str(out).strip():
        raise UserError("--out is an empty path")
    check_out(out, force)
    b = overlay.OverlayBuild(overlay.OverlayBuildConfig(
        model=Path(model), board=board, out=out, lanes=lanes,
        clock_mhz=clock_mhz, baud=baud, seed=seed,
        samples=samples, force=True))
    overlay.step_load(b)                    # the board, the clock, the model
    overlay.step_compile(b)                 # refuses a model that does not fit the configuration
    staging = None
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
        except OSError as exc:
            raise UserError(f"cannot create a folder beside {out}: {exc.strerror or exc}") from None
        top = overlay._board_top(b.overlay, b.spec, b.clock_mhz, baud)
        overlay.prepare(top, b.spec, staging, seed)
        _verilog(staging)
        overlay.save_images(staging / overlay.IMAGES_FILE, b.program)
        listing = b.program.listing(b.events, b.descriptor_cycles)
        (staging / "program.txt").write_text(listing + "\n")
        cycles = b.sample_cycles.astype(float)
        program = b.program
        files = [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(staging.iterdir())]
        report = {
            "schema_version": SCHEMA_VERSION,
            "kind": "overlay",
            "model": str(model),
            "model_id": f"{program.model_id:08x}",
            "board": b.spec.name,
            "device": b.spec.device,
            "lanes": program.config.lanes,
            "lanes_choice": "given" if lanes is not None else f"the {b.spec.name}'s standard overlay",
            "schedule": "overlay",
            "clock_mhz": b.clock_mhz,
            "baud": baud,
            "seed": seed,
            "overlay": overlay_config.describe(program.config),
            "program": {"descriptors": len(program.descriptors), "weight_words": int(len(program.weights)),
                        "bank_words": {bank.name.lower(): int(n) for bank, n in program.bank_words.items()},
                        "images": overlay.IMAGES_FILE, "listing": "program.txt"},
            "cycles_per_inference": float(cycles.mean()),
            "cycles_min": int(cycles.min()),
            "cycles_max": int(cycles.max()),
            "samples": int(len(b.x)),
            "samples_from": b.samples_from,
            "top": "top",
            "files": files,
        }
        build._write_atomic(staging / "report.json", json.dumps(report, indent=2) + "\n")
        files = [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(staging.iterdir())]
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)   # mkdtemp made it private; the folder gets the usual mode
        build._swap_into_place(staging, out)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    report = {k: v for k, v in report.items() if k != "schema_version"}
    report.update(out=str(out), files=files, seconds={"export": time.monotonic() - t0})
    return report, 0


def print_report(r: dict) -> None:
    what = (f"{r['model']}'s program ({r['program']['descriptors']} descriptors, {r['cycles_per_inference']:,.0f} "
            f"cycles per inference) with the {r['board']}'s overlay (configuration {r['overlay']['config_hash']})")
    print(f"exported {what} ({r['device']}), {r['lanes']} lane"
          f"{'s' if r['lanes'] != 1 else ''}, {r['clock_mhz']:g} MHz, model id {r['model_id']}, into {r['out']} "
          f"(top module {r['top']}; {r['seconds']['export']:.1f} s):")
    for f in r["files"]:
        print(f"  {f['name']:<16} {f['bytes']:>12,} bytes")
