"""``python -m compiler export``: the design a board gets, as files, without running the tools.

``build``'s own steps up to ``generate`` (:mod:`compiler.flows.build`): the board and the clock checked, the
model loaded, lowered and mapped (lanes given or ``auto``; refused if it cannot fit the board, or if no hardware
runs its ops yet), the board top (PLL, accelerator, UART bridge, LEDs) written by Amaranth's platform as RTLIL
with the tools' scripts and constraints (:func:`boards.build.prepare`), and that RTLIL as Verilog by the Yosys
script the simulators use (:func:`sim.verilog.from_rtlil`). The files appear in the output folder only once all
of them are written (a staging folder beside it is renamed into place).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from boards import get_board
from sim import verilog

from ..errors import UserError
from . import build

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


def run(model: str | Path, board: str, out: str | Path, *, lanes: int | None = None,
        clock_mhz: float = build.DEFAULT_CLOCK_MHZ, baud: int = build.DEFAULT_BAUD, force: bool = False,
        samples: int = build.DEFAULT_SAMPLES) -> tuple[dict, int]:
    """Write the RTLIL, Verilog, constraints and tool scripts of ``model``'s board top into ``out``;
    ``(report, 0)``."""
    t0 = time.monotonic()
    out = Path(out)
    if not str(out).strip():
        raise UserError("--out is an empty path")
    check_out(out, force)
    b = build.Build(build.BuildConfig(model=Path(model), board=board, out=out, lanes=lanes, clock_mhz=clock_mhz,
                                      baud=baud, samples=samples, force=True))
    b.spec = get_board(board)
    b.clock_mhz, b.uart_divisor = build.check_clock(b.spec, clock_mhz, baud)
    build.load_model(b)
    build.step_estimate(b)                      # refuses what cannot fit the board, and conv models
    try:
        build.step_generate(b)                  # top.il, top.lpf, top.ys, build_top.sh in <out>.partial-*
        try:
            text = verilog.from_rtlil((b.staging / "top.il").read_text())
        except RuntimeError as exc:
            raise UserError(f"cannot write the Verilog: {str(exc).strip().splitlines()[0]}") from None
        (b.staging / "top.v").write_text(text)
        for name in _LEFT_OUT:
            (b.staging / name).unlink(missing_ok=True)
        files = [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(b.staging.iterdir())]
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(b.staging, 0o777 & ~umask)     # mkdtemp made it private; the folder gets the usual mode
        build._swap_into_place(b.staging, out)
    except BaseException:
        if b.staging is not None:
            shutil.rmtree(b.staging, ignore_errors=True)
        raise
    report = {
        "model": str(model),
        "model_id": f"{b.plan.model_id:08x}",
        "board": b.spec.name,
        "device": b.spec.device,
        "lanes": b.plan.lanes,
        "lanes_choice": b.lanes_note,
        "schedule": "dense" if b.plan.dense else "event-driven",
        "clock_mhz": b.clock_mhz,
        "baud": baud,
        "out": str(out),
        "top": "top",
        "files": files,
        "seconds": {"export": time.monotonic() - t0},
    }
    return report, 0


def print_report(r: dict) -> None:
    print(f"exported {r['model']} for the {r['board']} ({r['device']}), {r['lanes']} lane"
          f"{'s' if r['lanes'] != 1 else ''}, {r['clock_mhz']:g} MHz, model id {r['model_id']}, into {r['out']} "
          f"(top module {r['top']}; {r['seconds']['export']:.1f} s):")
    for f in r["files"]:
        print(f"  {f['name']:<16} {f['bytes']:>12,} bytes")
