"""The SDRAM controller: LiteDRAM's standalone core, generated for a chip and a clock, wrapped as an Amaranth
component that initialises the chip itself (no CPU).

:func:`generate` runs LiteDRAM's generator (``litedram.gen``, the ``litedram_gen`` command) on a configuration
made from an :class:`~hdl.sdram.chip.SdramChip` and the core clock: SDR memory, LiteDRAM's generic SDR PHY
(``GENSDRPHY``, ECP5 I/O registers), no CPU, one native user port. It writes ``litedram_core.v`` and reads back
the addresses of the control registers and the PHY's CAS latency.

:class:`SdramController` instantiates that core and drives its control bus (Wishbone) through the chip's
power-up sequence (:func:`init_steps`): the wait with the clock running, PRECHARGE ALL, two AUTO REFRESH, LOAD
MODE (the PHY's CAS latency, bursts of one), then hands the chip to the controller and raises ``ready``. The
user port is three streams: commands (``we``, word address), write data (with byte enables) and read data.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, IOPort, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .chip import SdramChip

__all__ = ["GeneratedCore", "generate", "core_config", "init_steps", "Write", "Wait", "SdramPins",
           "SdramController", "CORE_NAME", "FIFO_DEPTH", "STREAM_WORDS_PER_CYCLE", "STREAM_OVERHEAD"]

CORE_NAME = "litedram_core"

#: Writes (with their data) and reads in flight that :class:`SdramController` holds.
FIFO_DEPTH = 16

#: Words a cycle that :class:`SdramController` moves in a long run of consecutive addresses, reads or writes,
#: refresh and row changes included: 4,096 words read in 4,269 cycles and written in 4,316 on the device
#: model at 60 MHz (``tests/test_sdram_litedram.py::test_sequential_bandwidth`` checks it). The bandwidth
#: bound of streamed weights.
STREAM_WORDS_PER_CYCLE = 0.95

#: Cycles that a fetch through :class:`SdramController` takes beyond its words at
#: :data:`STREAM_WORDS_PER_CYCLE` (the first word's latency, the last write): ``Fetch`` moved 256 SDRAM words in
#: 281 cycles on the device model at 60 MHz (``tests/test_sdram_litedram.py``), 256 / 0.95 + 11.5. With
#: ``hdl.npu.overlay.SDRAM`` the overlay's cycle formula counts a FETCH with it.
STREAM_OVERHEAD = 11.5

# LiteDRAM's DFI injector: the control register's and the command register's bits (sdram_phy.h)
_CONTROL_SEL, _CONTROL_CKE, _CONTROL_ODT, _CONTROL_RESET_N = 1, 2, 4, 8
_COMMAND_CS, _COMMAND_WE, _COMMAND_CAS, _COMMAND_RAS = 1, 2, 4, 8


@dataclass(frozen=True)
class GeneratedCore:
    """What :func:`generate` wrote: the core's Verilog, its control registers (name -> Wishbone word address),
    the PHY's CAS latency, the user port's address and data widths, and the chip and clock it is for."""
    verilog: Path
    registers: dict[str, int]
    cas_latency: int
    address_bits: int
    data_bits: int
    chip: SdramChip
    clock_mhz: float


def core_config(chip: SdramChip, clock_mhz: float) -> dict:
    """LiteDRAM's generator configuration (its YAML, here as JSON, which YAML reads) for ``chip`` at
    ``clock_mhz``."""
    return {"device": "LFE5U-85F-6BG381C",          # any ECP5: it selects the ECP5 I/O registers
            "cpu": "None", "memtype": "SDR", "uart": "rs232",
            "sdram_module": chip.litedram_module, "sdram_module_nb": chip.data_bits // 8, "sdram_rank_nb": 1,
            "sdram_phy": "GENSDRPHY", "input_clk_freq": clock_mhz * 1e6, "sys_clk_freq": clock_mhz * 1e6,
            "user_ports": {"native_0": {"type": "native"}}}


def generate(chip: SdramChip, clock_mhz: float, folder: str | Path) -> GeneratedCore:
    """Generate LiteDRAM's core for ``chip`` at ``clock_mhz`` into ``folder`` (``litedram_core.v``). Takes
    about a second. Raises RuntimeError with the generator's last lines if it fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="litedram-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(json.dumps(core_config(chip, clock_mhz)))
        # run in the temporary folder: LiteX stamps its output with the git commit of its working directory
        proc = subprocess.run([sys.executable, "-m", "litedram.gen", str(config), "--name", CORE_NAME,
                               "--output-dir", str(Path(tmp) / "build")], cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"litedram.gen failed for {chip.name} at {clock_mhz} MHz:\n{tail}")
        build = Path(tmp) / "build"
        verilog = (build / "gateware" / f"{CORE_NAME}.v").read_text()
        with open(build / "csr.csv") as f:
            registers = {row[1]: int(row[2], 0) // 4 for row in csv.reader(f) if row and row[0] == "csr_register"}
        phy = (build / "software" / "include" / "generated" / "sdram_phy.h").read_text()
    cas_latency = int(re.search(r"#define SDRAM_PHY_CL (\d+)", phy).group(1))
    # The generator stamps the time, and lists the I/O cells in its hierarchy comment in an order that changes
    # from run to run (the Verilog itself does not): both are cut, so that the same chip and clock give the
    # same file. Migen declares the data bus, which the core's own I/O buffers drive, as an input.
    verilog = re.sub(r"^// Date +: .*\n", "", verilog, count=1, flags=re.M)
    verilog = re.sub(r"^//  Auto-Generated by LiteX on .*$", "//  Generated by LiteX", verilog, flags=re.M)
    verilog = re.sub(r"^└─── \[\w+\]\n", "", verilog, flags=re.M)
    verilog, count = re.subn(r"input  wire   \[(\d+):0\] sdram_dq,", r"inout  wire   [\1:0] sdram_dq,", verilog)
    if count != 1:
        raise RuntimeError("litedram.gen's core has no sdram_dq port where expected: a new LiteDRAM release?")
    address_bits = int(re.search(r"input  wire +\[(\d+):0\] user_port_native_0_cmd_addr", verilog).group(1)) + 1
    data_bits = int(re.search(r"input  wire +\[(\d+):0\] user_port_native_0_wdata_data", verilog).group(1)) + 1
    path = folder / f"{CORE_NAME}.v"
    path.write_text(verilog)
    return GeneratedCore(path, registers, cas_latency, address_bits, data_bits, chip, clock_mhz)


@dataclass(frozen=True)
class Write:
    """Write ``value`` to the control register ``register``."""
    register: str
    value: int


@dataclass(frozen=True)
class Wait:
    """Wait ``cycles`` cycles."""
    cycles: int


def init_steps(core: GeneratedCore) -> list[Write | Wait]:
    """The chip's power-up sequence as control register writes and waits (the datasheet's, at the core's
    clock; each command's wait counts from the end of its register write)."""
    n = core.chip.cycles(core.clock_mhz)
    software = _CONTROL_CKE | _CONTROL_ODT | _CONTROL_RESET_N

    def command(bits, address=0):
        return [Write("sdram_dfii_pi0_address", address), Write("sdram_dfii_pi0_baddress", 0),
                Write("sdram_dfii_pi0_command", bits | _COMMAND_CS), Write("sdram_dfii_pi0_command_issue", 1)]

    mode = core.cas_latency << 4                       # burst length 1, sequential, burst writes
    return [Write("sdram_dfii_control", 0),             # software control, CKE low: the controller is held off
            Write("sdram_dfii_control", software), Wait(n["init"]),
            *command(_COMMAND_RAS | _COMMAND_WE, 1 << 10), Wait(n["rp"]),              # PRECHARGE ALL
            *command(_COMMAND_RAS | _COMMAND_CAS), Wait(n["rfc"]),                     # AUTO REFRESH
            *command(_COMMAND_RAS | _COMMAND_CAS), Wait(n["rfc"]),
            *command(_COMMAND_RAS | _COMMAND_CAS | _COMMAND_WE, mode), Wait(n["mrd"]),  # LOAD MODE
            Write("sdram_dfii_control", _CONTROL_SEL | software),                      # hardware control
            Write("ddrctrl_init_done", 1)]


class SdramPins:
    """The chip's pins as I/O ports (a board's ``request("sdram", dir="-")``, or made here for a simulation:
    ``SdramPins.make(chip)``)."""

    NAMES = ("a", "ba", "cas_n", "cke", "cs_n", "dm", "dq", "ras_n", "we_n")

    def __init__(self, **ports):
        missing = set(self.NAMES) - set(ports)
        if missing:
            raise ValueError(f"SdramPins needs the ports {', '.join(sorted(missing))}")
        for name in self.NAMES:
            setattr(self, name, ports[name])

    #: Our names -> the subsignals of amaranth-boards' ``SDRAMResource`` (its ``cs``, ``we``, ``ras`` and ``cas``
    #: are the active-low pins, used here as they are on the wire).
    RESOURCE = {"a": "a", "ba": "ba", "cas_n": "cas", "cke": "clk_en", "cs_n": "cs", "dm": "dqm", "dq": "dq",
                "ras_n": "ras", "we_n": "we"}

    @classmethod
    def request(cls, platform, number: int = 0) -> tuple["SdramPins", object]:
        """The board's SDRAM pins from ``platform`` (its ``sdram`` resource ``number``) and, apart, the chip's
        clock pin (a port for an output buffer)."""
        res = platform.request("sdram", number, dir="-")
        return cls(**{name: getattr(res, sub).io for name, sub in cls.RESOURCE.items()}), res.clk

    @classmethod
    def make(cls, chip: SdramChip) -> "SdramPins":
        widths = dict(a=max(chip.rows.bit_length() - 1, 11), ba=(chip.banks - 1).bit_length(), dm=chip.data_bits // 8,
                      dq=chip.data_bits)
        return cls(**{name: IOPort(widths.get(name, 1), name=f"sdram_{name}") for name in cls.NAMES})


def _command_layout(address_bits):
    return data.StructLayout({"we": 1, "addr": address_bits})


def _write_layout(data_bits):
    return data.StructLayout({"data": data_bits, "we": data_bits // 8})


class SdramController(wiring.Component):
    """LiteDRAM's core (:func:`generate`) on ``pins``, initialising the chip after reset.

    Members
    -------
    cmd : In(stream.Signature(StructLayout({"we": 1, "addr": address_bits})))
        Read or write one word of ``data_bits`` at word address ``addr``.
    wdata : In(stream.Signature(StructLayout({"data": data_bits, "we": data_bits // 8})))
        A write's data, with byte enables: taken together with its write command.
    rdata : Out(stream.Signature(data_bits))
        Read data, in the order of the read commands. It may wait: a read command is taken only while
        :data:`FIFO_DEPTH` words of room remain for it and the reads before it.
    ready : Out(1)
        The chip is initialised: commands are taken from here on.
    idle : Out(1)
        No write waits for the chip: every write taken has been issued to it.
    """

    def __init__(self, core: GeneratedCore, pins: SdramPins):
        self._core, self._pins = core, pins
        super().__init__({
            "cmd": In(stream.Signature(_command_layout(core.address_bits))),
            "wdata": In(stream.Signature(_write_layout(core.data_bits))),
            "rdata": Out(stream.Signature(core.data_bits)),
            "ready": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core, pins = self._core, self._pins

        # LiteDRAM's native port neither waits for write data (it takes the word when the write reaches the
        # chip, valid or not) nor for a reader (read data's ready is ignored). So a write command is taken only
        # with its data, which waits in a FIFO; read data lands in a FIFO, and a read is taken only while that
        # FIFO has room for it and for every read still in flight. Nothing is taken before the chip is ready.
        m.submodules.wfifo = wfifo = SyncFIFOBuffered(width=len(self.wdata.payload.as_value()), depth=FIFO_DEPTH)
        m.submodules.rfifo = rfifo = SyncFIFOBuffered(width=core.data_bits, depth=FIFO_DEPTH)
        wiring.connect(m, wiring.flipped(self.rdata), rfifo.r_stream)
        in_flight = Signal(range(FIFO_DEPTH + 1))
        we = self.cmd.payload.we
        cmd_valid, cmd_ready = Signal(), Signal()
        room = Mux(we, self.wdata.valid & wfifo.w_rdy, rfifo.level + in_flight < FIFO_DEPTH)
        m.d.comb += [cmd_valid.eq(self.cmd.valid & room & self.ready), self.cmd.ready.eq(cmd_ready & room & self.ready)]
        taken = cmd_valid & cmd_ready
        m.d.comb += [wfifo.w_en.eq(taken & we), wfifo.w_data.eq(self.wdata.payload), self.wdata.ready.eq(taken & we)]
        m.d.sync += in_flight.eq(in_flight + (taken & ~we) - rfifo.w_en)
        wdata = Signal.like(self.wdata.payload)
        m.d.comb += [wdata.eq(wfifo.r_data), self.idle.eq(~wfifo.r_rdy)]
        wb = {name: Signal(width, name=f"wb_{name}") for name, width in
              (("adr", 30), ("dat_w", 32), ("dat_r", 32), ("we", 1), ("cyc", 1), ("stb", 1), ("ack", 1))}
        m.submodules.core = Instance(
            CORE_NAME,
            i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"),
            io_sdram_a=pins.a, io_sdram_ba=pins.ba, io_sdram_cas_n=pins.cas_n, io_sdram_cke=pins.cke,
            io_sdram_cs_n=pins.cs_n, io_sdram_dm=pins.dm, io_sdram_dq=pins.dq, io_sdram_ras_n=pins.ras_n,
            io_sdram_we_n=pins.we_n,
            i_user_port_native_0_cmd_valid=cmd_valid, o_user_port_native_0_cmd_ready=cmd_ready,
            i_user_port_native_0_cmd_we=self.cmd.payload.we, i_user_port_native_0_cmd_addr=self.cmd.payload.addr,
            i_user_port_native_0_wdata_valid=wfifo.r_rdy, o_user_port_native_0_wdata_ready=wfifo.r_en,
            i_user_port_native_0_wdata_data=wdata.data, i_user_port_native_0_wdata_we=wdata.we,
            o_user_port_native_0_rdata_valid=rfifo.w_en, i_user_port_native_0_rdata_ready=Const(1),
            o_user_port_native_0_rdata_data=rfifo.w_data,
            i_wb_ctrl_adr=wb["adr"], i_wb_ctrl_dat_w=wb["dat_w"], o_wb_ctrl_dat_r=wb["dat_r"],
            i_wb_ctrl_sel=Const(0xF, 4), i_wb_ctrl_cyc=wb["cyc"], i_wb_ctrl_stb=wb["stb"], o_wb_ctrl_ack=wb["ack"],
            i_wb_ctrl_we=wb["we"], i_wb_ctrl_cti=Const(0, 3), i_wb_ctrl_bte=Const(0, 2))

        # the power-up sequence: one state per register write (held until acknowledged) or wait
        steps = init_steps(core)
        count = Signal(range(max((s.cycles for s in steps if isinstance(s, Wait)), default=1) + 1))
        with m.FSM():
            for i, step in enumerate(steps):
                with m.State(f"step{i}"):
                    after = f"step{i + 1}" if i + 1 < len(steps) else "ready"
                    if isinstance(step, Write):
                        m.d.comb += [wb["cyc"].eq(1), wb["stb"].eq(1), wb["we"].eq(1),
                                     wb["adr"].eq(core.registers[step.register]), wb["dat_w"].eq(step.value)]
                        with m.If(wb["ack"]):
                            m.next = after
                    else:
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == step.cycles - 1):
                            m.d.sync += count.eq(0)
                            m.next = after
            with m.State("ready"):
                m.d.comb += self.ready.eq(1)
        return m
