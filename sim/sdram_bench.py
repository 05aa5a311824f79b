"""The SDRAM controller (``hdl.sdram.litedram``) on the device model (``sim.sdram_model``), as Verilog for a
simulator: the two converted from Amaranth, and a top module that joins them, with the data bus as a
tristate net that both drive (Amaranth lets an I/O port be used only once, so the join is Verilog). The chip
is clocked by the core's clock inverted, as on the board: the SDRAM's clock pin lags the core's by half a
period, so that a command leaves the FPGA half a cycle before the chip samples it, and read data half a
cycle before the FPGA samples it.

The top module ``sdram_bench`` has the controller's ``clk``, ``rst``, ``cmd``, ``wdata``, ``rdata`` and ``ready``
and the model's ``violation``, ``violation_cycle``, ``refreshes``, ``reads`` and ``writes`` as ports. Its other
sources are LiteDRAM's core and models of the ECP5 cells it uses (:func:`ecp5_cells`).
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hdl.sdram.chip import SdramChip
from hdl.sdram.fetch import Fetch
from hdl.sdram.litedram import GeneratedCore, SdramController, SdramPins

from .sdram_model import SdramModel, Violation, store_source

__all__ = ["TOP", "FetchHost", "write_bench", "ecp5_cells"]

TOP = "sdram_bench"

#: The controller's pins and the model's ports that they drive.
_PINS = {"a": "a", "ba": "ba", "cas_n": "cas_n", "cke": "cke", "cs_n": "cs_n", "dm": "dqm", "ras_n": "ras_n",
         "we_n": "we_n"}
_MODEL_OUT = ("violation", "violation_cycle", "refreshes", "reads", "writes")


def ecp5_cells() -> Path:
    """Behavioural models of the ECP5 cells that the core instantiates (its I/O registers and pads)."""
    return Path(__file__).parent / "harness" / "ecp5_cells.v"


def _declared(source: str, module: str) -> list[tuple[str, str, int]]:
    """(name, direction, width) of each port that ``module`` of a Yosys-written ``source`` declares, in order."""
    body = re.search(rf"^module {module}\(.*?^endmodule", source, flags=re.M | re.S).group(0)
    return [(name, d, int(hi) + 1 if hi else 1) for d, hi, name in
            re.findall(r"^\s*(input|output|inout)\s*(?:\[(\d+):0\])?\s*(\w+);", body, flags=re.M)]


class FetchHost(wiring.Component):
    """The controller with :class:`~hdl.sdram.fetch.Fetch` copying SDRAM words into an on-chip memory of
    ``depth`` words of ``word_bits`` (a weight store's stand-in), for the bench.

    Members: the controller's ``cmd``, ``wdata``, ``rdata`` and ``ready`` (its streams are the fetch's while it
    is busy: use them only between fetches); the fetch's ``start``, ``src``, ``dst``, ``count``, ``busy`` and
    ``done``; ``mem_addr`` and ``mem_data``, a read port of the memory (data the cycle after the address).
    """

    def __init__(self, core: GeneratedCore, pins: SdramPins, word_bits: int = 64, depth: int = 64):
        self._ctrl = SdramController(core, pins)
        self._fetch = Fetch(word_bits, depth, sdram_bits=core.data_bits, address_bits=core.address_bits)
        self._word_bits, self._depth = word_bits, depth
        ctrl, fetch = self._ctrl.signature.members, self._fetch.signature.members
        super().__init__({
            **{name: ctrl[name] for name in ("cmd", "wdata", "rdata", "ready")},
            **{name: fetch[name] for name in ("start", "src", "dst", "count", "busy", "done")},
            "mem_addr": In(range(depth)), "mem_data": Out(word_bits),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = ctrl = self._ctrl
        m.submodules.fetch = fetch = self._fetch
        m.submodules.mem = mem = memory.Memory(shape=self._word_bits, depth=self._depth, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.en.eq(fetch.w_en), wp.addr.eq(fetch.w_addr), wp.data.eq(fetch.w_data),
                     rp.addr.eq(self.mem_addr), self.mem_data.eq(rp.data), self.ready.eq(ctrl.ready)]
        for name in ("start", "src", "dst", "count"):
            m.d.comb += getattr(fetch, name).eq(getattr(self, name))
        m.d.comb += [self.busy.eq(fetch.busy), self.done.eq(fetch.done)]
        wiring.connect(m, wiring.flipped(self.wdata), ctrl.wdata)
        with m.If(fetch.busy):
            m.d.comb += [ctrl.cmd.valid.eq(fetch.cmd.valid), ctrl.cmd.payload.eq(fetch.cmd.payload),
                         fetch.cmd.ready.eq(ctrl.cmd.ready),
                         fetch.rdata.valid.eq(ctrl.rdata.valid), fetch.rdata.payload.eq(ctrl.rdata.payload),
                         ctrl.rdata.ready.eq(fetch.rdata.ready)]
        with m.Else():
            m.d.comb += [ctrl.cmd.valid.eq(self.cmd.valid), ctrl.cmd.payload.eq(self.cmd.payload),
                         self.cmd.ready.eq(ctrl.cmd.ready),
                         self.rdata.valid.eq(ctrl.rdata.valid), self.rdata.payload.eq(ctrl.rdata.payload),
                         ctrl.rdata.ready.eq(self.rdata.ready)]
        return m


def write_bench(core: GeneratedCore, folder: str | Path, *, rows: int | None = None,
                model_chip: SdramChip | None = None, host=SdramController, top: str = TOP,
                stop_on_violation: bool = False) -> list[Path]:
    """Write the bench's Verilog into ``folder``: the controller, the model of the core's chip (storing ``rows``
    rows a bank) and the top (module ``top``). ``model_chip``: the part the model checks against instead (a
    slower one shows that the model catches a controller that breaks its limits). ``host``: what the chip's
    pins belong to, called with the core and the pins (:class:`~hdl.sdram.litedram.SdramController`, or
    :class:`FetchHost`); its ports are the top's (with ``rst`` if it has one; the model's reset is then the
    top's, else never). ``stop_on_violation``: the top ends the simulation (``$finish``) at the model's first
    violation, which it prints on standard error (the model prints nothing). Returns the sources to compile, the
    core's, the ECP5 cell models and the model's store included."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chip = core.chip
    ctrl = host(core, SdramPins.make(chip))
    model = SdramModel(model_chip or chip, core.clock_mhz, rows=rows, report=not stop_on_violation, store="verilog")
    sources = []
    for component, name in ((ctrl, "sdram_controller"), (model, "sdram_model")):
        path = folder / f"{name}.v"
        path.write_text(verilog.convert(component, name=name, emit_src=False))
        sources.append(path)

    declared = _declared(sources[0].read_text(), "sdram_controller")
    has_rst = any(p[0] == "rst" for p in declared)
    ctrl_ports = [p for p in declared if p[0] not in ("clk", "rst") and not p[0].startswith("sdram_")]
    model_ports = {name: w for name, _, w in _declared(sources[1].read_text(), "sdram_model")}
    decl = lambda d, w, n: f"    {d} wire {'[%d:0] ' % (w - 1) if w > 1 else ''}{n}"   # noqa: E731
    ports = ["    input wire clk", *(["    input wire rst"] if has_rst else [])]
    ports += [decl(d, w, n) for n, d, w in ctrl_ports]
    ports += [decl("output", model_ports[n], n) for n in _MODEL_OUT]
    pins = SdramPins.make(chip)
    wires = [f"    wire {'[%d:0] ' % (len(getattr(pins, p)) - 1) if len(getattr(pins, p)) > 1 else ''}pin_{p};"
             for p in SdramPins.NAMES]
    dq = len(pins.dq)
    rst = "rst" if has_rst else "1'b0"
    # (on standard error: a harness's standard output may be its answers)
    names = [f'            {int(v)}: $fwrite(32\'h80000002, "sdram model: cycle %0d: {v.name}\\n", violation_cycle);'
             for v in Violation if v != Violation.NONE]
    stop = ["    always @(posedge clk) if (violation != 0) begin", "        case (violation)", *names,
            "        endcase", "        $finish;", "    end"] if stop_on_violation else []
    lines = ["// The SDRAM bench: generated by sim/sdram_bench.py", f"module {top} (", ",\n".join(ports), ");",
             *wires,
             f"    wire [{dq - 1}:0] dq_o;", "    wire dq_oe;",
             f"    assign pin_dq = dq_oe ? dq_o : {dq}'bz;",
             f"    sdram_controller ctrl (.clk(clk),{' .rst(rst),' if has_rst else ''}",
             ",\n".join([f"        .{n}({n})" for n, _, _ in ctrl_ports]
                        + [f"        .sdram_{p}(pin_{p})" for p in SdramPins.NAMES]) + ");",
             "    // the chip's clock: the core's, inverted (LiteX's ULX3S target shifts it by 180 degrees too)",
             f"    sdram_model model (.clk(~clk), .rst({rst}),",
             ",\n".join([f"        .{port}(pin_{pin})" for pin, port in _PINS.items()]
                        + ["        .dq_i(pin_dq)", "        .dq_o(dq_o)", "        .dq_oe(dq_oe)"]
                        + [f"        .{n}({n})" for n in _MODEL_OUT]) + ");",
             *stop, "endmodule", ""]
    path = folder / f"{top}.v"
    path.write_text("\n".join(lines))
    return [path, *sources, core.verilog, ecp5_cells(), store_source()]
