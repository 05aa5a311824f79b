"""A cycle-accurate SDR SDRAM device model that checks every timing limit of the datasheet.

:class:`SdramModel` is the chip as a controller sees it: commands on its pins, CAS latency, bursts, four banks,
refresh. It stores what is written and drives read data on ``dq_o`` (with ``dq_oe``) ``CL`` cycles after a
READ, and it flags the first rule the controller breaks in ``violation`` (sticky, with the cycle in
``violation_cycle`` and a line printed by the simulator). It is gateware, so the same model runs in the
Amaranth simulator, in Icarus Verilog and in Verilator next to the controller.

Cycle convention: the model samples its pins at each rising edge of its clock, like the chip. A READ sampled
at edge ``n`` has its first word on ``dq_o`` between edges ``n + CL - 1`` and ``n + CL``, to be sampled at
edge ``n + CL``; a WRITE takes its first word with the command (write latency 0, as SDR parts do).

What it checks (each a :class:`Violation`): the power-up wait before the first command; that the mode
register is loaded before any ACTIVE; ACTIVE to an open bank, READ or WRITE to a closed one; tRCD, tRP, tRAS
(minimum), tRC, tRRD, tRFC, tWR and tMRD; AUTO REFRESH and LOAD MODE only with every bank closed; refresh
owed (the controller may postpone at most ``chip.postponed_refreshes``); mode register values the model does
not support (interleaved bursts, full-page bursts, a CAS latency the part does not have); auto-precharge and
power-down or self refresh (``cke`` low once the mode is set), which the model does not implement; and a row
beyond the rows it stores (``rows``: a smaller model for fast simulations).
"""

from __future__ import annotations

import enum
from pathlib import Path
from types import SimpleNamespace as _Port

from amaranth.hdl import Cat, ClockSignal, Const, Format, Instance, Module, Mux, Print, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hdl.sdram.chip import SdramChip

__all__ = ["Violation", "Command", "SdramModel", "STORE_MODULE", "store_source"]

#: The Verilog module of ``SdramModel(store="verilog")``'s store (:func:`store_source`).
STORE_MODULE = "sdram_model_store"


def store_source() -> Path:
    """The Verilog of :data:`STORE_MODULE`, to compile with a model converted with ``store="verilog"``."""
    return Path(__file__).parent / "harness" / "sdram_store.v"


class Violation(enum.IntEnum):
    """The first rule a controller broke (``SdramModel.violation``)."""
    NONE = 0
    EARLY = 1               # a command before the power-up wait ended
    NO_MODE = 2             # ACTIVE, READ or WRITE before the mode register was loaded
    ACTIVE_OPEN = 3         # ACTIVE to a bank that has a row open
    IDLE_BANK = 4           # READ or WRITE to a bank without an open row
    T_RCD = 5
    T_RP = 6
    T_RAS = 7
    T_RC = 8
    T_RRD = 9
    T_RFC = 10
    T_WR = 11
    T_MRD = 12
    BANKS_OPEN = 13         # AUTO REFRESH or LOAD MODE with a row open
    REFRESH_LATE = 14       # more refreshes owed than the part allows
    UNSUPPORTED = 15        # power-down, self refresh, or a mode the model does not implement
    ROW_OUTSIDE = 16        # a row beyond the rows the model stores


class Command(enum.IntEnum):
    """``{ras_n, cas_n, we_n}`` of each command (with ``cs_n`` low)."""
    LOAD_MODE = 0b000
    REFRESH = 0b001
    PRECHARGE = 0b010
    ACTIVE = 0b011
    WRITE = 0b100
    READ = 0b101
    BURST_STOP = 0b110
    NOP = 0b111


_SAT = 255                  # cycle counters saturate here: every limit of a part below 200 MHz is shorter


class SdramModel(wiring.Component):
    """The SDRAM ``chip`` clocked at ``clock_mhz`` (its limits in cycles at that clock), storing ``rows`` rows
    of each bank (default: all of them). With ``report``, the first violation is also printed (a simulator's
    standard output). ``store``: ``"memory"`` (an Amaranth memory) or ``"verilog"`` (an instance of
    :data:`STORE_MODULE`, the same memory without initial contents, for Verilog simulators: compile
    :func:`store_source` with it).

    Members
    -------
    cke, cs_n, ras_n, cas_n, we_n, ba, a, dqm, dq_i : In
        The chip's pins (``dq_i``: the data bus as driven by the controller).
    dq_o, dq_oe : Out
        Read data and its output enable.
    violation : Out(Violation)
        The first rule broken, held until reset.
    violation_cycle : Out(32)
        The cycle (from reset) of that command.
    refreshes, reads, writes : Out(32)
        AUTO REFRESH commands, and words read and written.
    """

    def __init__(self, chip: SdramChip, clock_mhz: float, rows: int | None = None, report: bool = True,
                 store: str = "memory"):
        rows = chip.rows if rows is None else rows
        if not isinstance(rows, int) or rows < 2 or rows > chip.rows or rows & (rows - 1):
            raise ValueError(f"rows must be a power of two from 2 to {chip.rows}, not {rows!r}")
        if store not in ("memory", "verilog"):
            raise ValueError(f"store must be 'memory' or 'verilog', not {store!r}")
        self._chip, self._rows, self._report, self._store = chip, rows, report, store
        self._n = chip.cycles(clock_mhz)
        if max(v for k, v in self._n.items() if k not in ("init", "refi")) > _SAT:
            raise ValueError(f"{chip.name} at {clock_mhz} MHz has a limit above {_SAT} cycles")
        addr_bits = max(chip.rows.bit_length() - 1, 11)
        super().__init__({
            "cke": In(1), "cs_n": In(1), "ras_n": In(1), "cas_n": In(1), "we_n": In(1),
            "ba": In(range(chip.banks)), "a": In(addr_bits), "dqm": In(chip.data_bits // 8),
            "dq_i": In(chip.data_bits), "dq_o": Out(chip.data_bits), "dq_oe": Out(1),
            "violation": Out(Violation), "violation_cycle": Out(32),
            "refreshes": Out(32), "reads": Out(32), "writes": Out(32),
        })

    @property
    def cycles(self) -> dict[str, int]:
        """The chip's limits in cycles at this model's clock (``SdramChip.cycles``)."""
        return dict(self._n)

    def elaborate(self, platform):
        m = Module()
        chip, n, B = self._chip, self._n, self._chip.banks
        col_bits, row_bits = (chip.columns - 1).bit_length(), (self._rows - 1).bit_length()
        bank_bits = (B - 1).bit_length()

        depth = B * self._rows * chip.columns
        if self._store == "memory":
            store = memory.Memory(shape=chip.data_bits, depth=depth, init=[])
            m.submodules.store = store
            rd = store.read_port()
            wr = store.write_port(granularity=8)
        else:                               # the same memory in Verilog, for Verilog simulators (store_source)
            rd = _Port(addr=Signal(range(depth)), data=Signal(chip.data_bits))
            wr = _Port(addr=rd.addr, data=Signal(chip.data_bits), en=Signal(chip.data_bits // 8))
            m.submodules.store = Instance(STORE_MODULE, p_ADDR_BITS=(depth - 1).bit_length(),
                                          p_DATA_BITS=chip.data_bits, i_clk=ClockSignal(), i_addr=rd.addr,
                                          i_wdata=wr.data, i_wen=wr.en, o_rdata=rd.data)

        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)

        def since(name, init=_SAT):
            s = Signal(range(_SAT + 1), init=init, name=name)
            m.d.sync += s.eq(Mux(s == _SAT, _SAT, s + 1))
            return s
        act_ = [since(f"since_act{b}") for b in range(B)]
        pre_ = [since(f"since_pre{b}") for b in range(B)]
        wr_ = [since(f"since_wr{b}") for b in range(B)]
        act_any, ref_, mrd_ = since("since_act_any"), since("since_ref"), since("since_mrd")
        open_ = [Signal(name=f"open{b}") for b in range(B)]
        row_ = [Signal(row_bits, name=f"row{b}") for b in range(B)]
        # an auto precharge that has not begun yet: cycles until it does
        ap_left = [Signal(range(_SAT + 16), name=f"ap_left{b}") for b in range(B)]
        closing = [left != 0 for left in ap_left]
        for b in range(B):
            with m.If(ap_left[b] != 0):
                m.d.sync += ap_left[b].eq(ap_left[b] - 1)
            with m.If(ap_left[b] == 1):
                m.d.sync += pre_[b].eq(1)

        init_left = Signal(range(n["init"] + 1), init=n["init"])
        with m.If(init_left != 0):
            m.d.sync += init_left.eq(init_left - 1)

        # the mode register: burst length 2**bl_log2, CAS latency, single-location writes
        moded, bl_log2, cl, wb_single = Signal(), Signal(2), Signal(2, init=2), Signal()

        # refresh owed: one more every refi cycles after the power-up wait, one less per AUTO REFRESH
        refi_left = Signal(range(n["refi"] + 1), init=n["refi"])
        owed = Signal(signed(16))
        refreshed, due = Signal(), Signal()
        with m.If(init_left == 0):
            with m.If(refi_left == 1):
                m.d.sync += refi_left.eq(n["refi"])
                m.d.comb += due.eq(1)
            with m.Else():
                m.d.sync += refi_left.eq(refi_left - 1)
        m.d.sync += owed.eq(owed + due - refreshed)

        cmd = Signal(3)
        m.d.comb += cmd.eq(Mux(self.cs_n, Command.NOP, Cat(self.we_n, self.cas_n, self.ras_n)))
        bank = self.ba
        ap = self.a[10]

        # a rule broken this cycle (if several, one of them); the first one is printed
        found = Signal(Violation)

        def check(cond, violation: Violation, what: str):
            with m.If(~cond):
                m.d.comb += found.eq(violation)
                if self._report:
                    with m.If(self.violation == Violation.NONE):
                        m.d.sync += Print(Format("sdram model: cycle {}: {} ({})", cycle, what, violation.name))

        is_cmd = cmd != Command.NOP
        with m.If(is_cmd):
            check(init_left == 0, Violation.EARLY, "a command before the power-up wait ended")
            check(ref_ >= n["rfc"], Violation.T_RFC, "a command within tRFC of AUTO REFRESH")
            check(mrd_ >= n["mrd"], Violation.T_MRD, "a command within tMRD of LOAD MODE")
            check(self.cke, Violation.UNSUPPORTED, "a command with cke low")
        with m.If(moded & ~self.cke):
            check(Const(0), Violation.UNSUPPORTED, "cke low after the mode was set (power-down)")

        all_closed = ~Cat(*open_).any()
        all_precharged = Cat(*[(p >= n["rp"]) & ~c for p, c in zip(pre_, closing)]).all()
        sel = lambda signals: Cat(*signals).word_select(bank, len(signals[0]))  # noqa: E731
        bank_open = Cat(*open_).bit_select(bank, 1)
        bank_row = sel(row_)

        # the burst in progress: the word accessed this cycle
        burst_left = Signal(range(256))
        burst_col, burst_bank, burst_write = Signal(col_bits), Signal(bank_bits), Signal()
        burst_row = Signal(row_bits)
        access, access_write = Signal(), Signal()
        access_bank, access_row, access_col = Signal(bank_bits), Signal(row_bits), Signal(col_bits)
        bl = Signal(range(9))
        m.d.comb += bl.eq(1 << bl_log2)

        def start_burst(write):
            length = Mux(write & wb_single, 1, bl)
            col = self.a[:col_bits]
            mask = (bl - 1)[:col_bits]
            m.d.comb += [access.eq(1), access_write.eq(write), access_bank.eq(bank), access_row.eq(bank_row),
                         access_col.eq(col)]
            m.d.sync += [burst_left.eq(length - 1), burst_bank.eq(bank), burst_row.eq(bank_row),
                         burst_write.eq(write), burst_col.eq((col & ~mask) | ((col + 1) & mask))]

        with m.If(burst_left != 0):
            m.d.comb += [access.eq(1), access_write.eq(burst_write), access_bank.eq(burst_bank),
                         access_row.eq(burst_row), access_col.eq(burst_col)]
            m.d.sync += burst_left.eq(burst_left - 1)
            mask = (bl - 1)[:col_bits]
            m.d.sync += burst_col.eq((burst_col & ~mask) | ((burst_col + 1) & mask))

        with m.Switch(cmd):
            with m.Case(Command.LOAD_MODE):
                check(all_closed, Violation.BANKS_OPEN, "LOAD MODE with a row open")
                check(all_precharged, Violation.T_RP, "LOAD MODE within tRP of PRECHARGE")
                bl_code, cl_code = self.a[0:3], self.a[4:7]
                check((bl_code <= 3) & (~self.a[3] | (bl_code == 0)), Violation.UNSUPPORTED,
                      "a burst mode the model does not implement (full page or interleaved)")
                check(Cat(*[cl_code == c for c in chip.cas_latencies]).any() & (cl_code <= 3),
                      Violation.UNSUPPORTED, "a CAS latency the part does not have")
                check((self.a[7:9] == 0) & (self.a[10:] == 0), Violation.UNSUPPORTED,
                      "reserved mode register bits set (A7, A8, A10 and up: test modes)")
                m.d.sync += [moded.eq(1), bl_log2.eq(bl_code[:2]), cl.eq(cl_code[:2]), wb_single.eq(self.a[9]),
                             mrd_.eq(1)]
            with m.Case(Command.REFRESH):
                check(all_closed, Violation.BANKS_OPEN, "AUTO REFRESH with a row open")
                check(all_precharged, Violation.T_RP, "AUTO REFRESH within tRP of PRECHARGE")
                m.d.comb += refreshed.eq(1)
                m.d.sync += [ref_.eq(1), self.refreshes.eq(self.refreshes + 1)]
            with m.Case(Command.ACTIVE):
                check(moded, Violation.NO_MODE, "ACTIVE before LOAD MODE")
                check(~bank_open, Violation.ACTIVE_OPEN, "ACTIVE to a bank with a row open")
                check((sel(pre_) >= n["rp"]) & ~Cat(*closing).bit_select(bank, 1), Violation.T_RP,
                      "ACTIVE within tRP of PRECHARGE")
                check(sel(act_) >= n["rc"], Violation.T_RC, "ACTIVE within tRC of ACTIVE (same bank)")
                check(act_any >= n["rrd"], Violation.T_RRD, "ACTIVE within tRRD of ACTIVE")
                if self._rows < (1 << len(self.a)):
                    check(self.a[row_bits:] == 0, Violation.ROW_OUTSIDE, "a row beyond the model's rows")
                m.d.sync += act_any.eq(1)
                for b in range(B):
                    with m.If(bank == b):
                        m.d.sync += [open_[b].eq(1), row_[b].eq(self.a[:row_bits]), act_[b].eq(1)]
            with m.Case(Command.READ, Command.WRITE):
                write = cmd == Command.WRITE
                check(bank_open, Violation.IDLE_BANK, "READ or WRITE to a bank without an open row")
                check(sel(act_) >= n["rcd"], Violation.T_RCD, "READ or WRITE within tRCD of ACTIVE")
                start_burst(write)
                # auto precharge: it begins where a PRECHARGE could first follow the burst, once tRAS is met
                length = Mux(write & wb_single, 1, bl)
                after_burst = Mux(write, length - 1 + n["wr"], length)
                lockout = Mux(sel(act_) >= n["ras"], 0, n["ras"] - sel(act_))
                with m.If(ap):
                    for b in range(B):
                        with m.If(bank == b):
                            m.d.sync += [open_[b].eq(0), ap_left[b].eq(Mux(after_burst > lockout, after_burst,
                                                                            lockout))]
            with m.Case(Command.PRECHARGE):
                for b in range(B):
                    with m.If(ap | (bank == b)):
                        with m.If(open_[b]):
                            check(act_[b] >= n["ras"], Violation.T_RAS, f"PRECHARGE of bank {b} within tRAS")
                            check(wr_[b] >= n["wr"], Violation.T_WR, f"PRECHARGE of bank {b} within tWR")
                            m.d.sync += pre_[b].eq(1)
                        m.d.sync += open_[b].eq(0)
                with m.If(ap | (bank == burst_bank)):
                    m.d.sync += burst_left.eq(0)
            with m.Case(Command.BURST_STOP):
                m.d.sync += burst_left.eq(0)

        with m.If(owed > chip.postponed_refreshes):
            check(Const(0), Violation.REFRESH_LATE, "more refreshes owed than the part allows")

        with m.If((self.violation == Violation.NONE) & (found != Violation.NONE)):
            m.d.sync += [self.violation.eq(found), self.violation_cycle.eq(cycle)]

        # the storage: a write takes dq_i this cycle, a read's word leaves CL cycles after its command
        address = Cat(access_col, access_row, access_bank)
        m.d.comb += [rd.addr.eq(address), wr.addr.eq(address), wr.data.eq(self.dq_i),
                     wr.en.eq(Mux(access & access_write, ~self.dqm, 0))]
        with m.If(access & access_write):
            m.d.sync += [self.writes.eq(self.writes + 1)]
            for b in range(B):
                with m.If(access_bank == b):
                    m.d.sync += wr_[b].eq(1)
        reading = access & ~access_write
        with m.If(reading):
            m.d.sync += self.reads.eq(self.reads + 1)
        valid = Signal(3)
        stage1, stage2 = Signal(chip.data_bits), Signal(chip.data_bits)
        m.d.sync += [valid.eq(Cat(reading, valid[:2])), stage1.eq(rd.data), stage2.eq(stage1)]
        m.d.comb += [self.dq_o.eq(Mux(cl == 2, stage1, stage2)), self.dq_oe.eq(Mux(cl == 2, valid[1], valid[2]))]
        return m
