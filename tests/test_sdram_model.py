"""The SDRAM device model (sim/sdram_model.py) in the Amaranth simulator: a legal command sequence stores and
returns data at the CAS latency, and each timing rule, broken once, is flagged as that rule."""

from __future__ import annotations

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from hdl.sdram.chip import MT48LC16M16A2
from sim.sdram_model import Command, SdramModel, Violation

CLOCK_MHZ = 100.0                                   # 10 ns: tRCD = tRP = tRRD = tWR = 2 cycles, tRAS 5
CHIP = dataclasses.replace(MT48LC16M16A2, t_init=200.0)       # 20 cycles of power-up wait
N = CHIP.cycles(CLOCK_MHZ)


def mode(cl=2, bl=1, single_writes=False):
    return {1: 0, 2: 1, 4: 2, 8: 3}[bl] | cl << 4 | single_writes << 9


def run(steps, *, rows=16, clock_mhz=CLOCK_MHZ, chip=CHIP):
    """Drive ``steps`` (each ``(Command, bank, address[, data, dqm])`` or None for one NOP cycle) into a model,
    one per cycle, then 6 NOPs. Returns (violation, violation cycle, {cycle: dq_o} while dq_oe, the model)."""
    dut = SdramModel(chip, clock_mhz, rows=rows)
    seen = {}
    result = {}

    async def bench(ctx):
        ctx.set(dut.cke, 1)
        for cycle, step in enumerate(list(steps) + [None] * 6):
            cmd, ba, a, data, dqm = (step + (0, 0)[len(step) - 3:]) if step else (Command.NOP, 0, 0, 0, 0)
            ctx.set(dut.cs_n, 0)
            ctx.set(dut.ras_n, cmd >> 2 & 1)
            ctx.set(dut.cas_n, cmd >> 1 & 1)
            ctx.set(dut.we_n, cmd & 1)
            ctx.set(dut.ba, ba)
            ctx.set(dut.a, a)
            ctx.set(dut.dq_i, data)
            ctx.set(dut.dqm, dqm)
            if ctx.get(dut.dq_oe):
                seen[cycle] = ctx.get(dut.dq_o)
            await ctx.tick()
        result.update(violation=Violation(ctx.get(dut.violation)), at=ctx.get(dut.violation_cycle),
                      refreshes=ctx.get(dut.refreshes), reads=ctx.get(dut.reads), writes=ctx.get(dut.writes))

    sim = Simulator(dut)
    sim.add_clock(1e-6 / clock_mhz)
    sim.add_testbench(bench)
    sim.run()
    return result, seen


def init(cl=2, bl=1):
    """The power-up sequence: wait, PRECHARGE all, two AUTO REFRESH, LOAD MODE."""
    return ([None] * N["init"] + [(Command.PRECHARGE, 0, 1 << 10)] + [None] * N["rp"]
            + [(Command.REFRESH, 0, 0)] + [None] * (N["rfc"] - 1) + [(Command.REFRESH, 0, 0)]
            + [None] * (N["rfc"] - 1) + [(Command.LOAD_MODE, 0, mode(cl, bl))] + [None] * (N["mrd"] - 1))


def gap(cycles):
    return [None] * max(0, cycles - 1)


@pytest.mark.parametrize("cl", [2, 3])
def test_writes_then_reads_back_at_the_cas_latency(cl):
    row, bank = 5, 2
    words = [0x1234, 0xBEEF, 0x0F0F, 0xA5A5]
    steps = init(cl) + [(Command.ACTIVE, bank, row)] + gap(N["rcd"])
    for col, word in enumerate(words):
        steps.append((Command.WRITE, bank, col, word, 0))
    steps.append((Command.WRITE, bank, 1, 0xFFFF, 0b01))          # low byte masked: 0xFFEF
    first_read = len(steps)
    for col in range(len(words)):
        steps.append((Command.READ, bank, col))
    steps += [None] * 4 + [(Command.PRECHARGE, bank, 0)]
    result, seen = run(steps)
    assert result["violation"] == Violation.NONE, result
    expect = [0x1234, 0xFFEF, 0x0F0F, 0xA5A5]
    assert seen == {first_read + cl + i: w for i, w in enumerate(expect)}
    assert (result["refreshes"], result["reads"], result["writes"]) == (2, 4, 5)


@pytest.mark.parametrize("bl", [2, 4, 8])
def test_bursts_wrap_within_their_length(bl):
    bank, row, start = 1, 3, 6                               # a burst from column 6 wraps in its block of bl
    data = [0x100 + i for i in range(bl)]
    steps = init(2, bl) + [(Command.ACTIVE, bank, row)] + gap(N["rcd"])
    steps += [(Command.WRITE, bank, start, data[0], 0)] + [(Command.NOP, 0, 0, d, 0) for d in data[1:]]
    first_read = len(steps)
    steps += [(Command.READ, bank, start)] + [None] * (bl + 3) + [(Command.PRECHARGE, bank, 0)]
    result, seen = run(steps)
    assert result["violation"] == Violation.NONE, result
    assert [seen[first_read + 2 + i] for i in range(bl)] == data
    cols = [(start & ~(bl - 1)) | ((start + i) & (bl - 1)) for i in range(bl)]
    assert len(set(cols)) == bl                              # the burst visited bl distinct columns


#: At 100 MHz tRC (7 cycles) is tRAS + tRP: it is tested on a part with a longer one.
SLOW_RC = 9
CHIP_OF = {Violation.T_RC: dataclasses.replace(CHIP, t_rc=SLOW_RC * 1e3 / CLOCK_MHZ)}


def _opened(bank=0, row=1):
    return init() + [(Command.ACTIVE, bank, row)]


BROKEN = {
    Violation.EARLY: [(Command.PRECHARGE, 0, 1 << 10)],
    Violation.NO_MODE: [None] * N["init"] + [(Command.ACTIVE, 0, 1)],
    Violation.ACTIVE_OPEN: _opened() + gap(N["rc"]) + [(Command.ACTIVE, 0, 2)],
    Violation.IDLE_BANK: init() + [(Command.READ, 0, 0)],
    Violation.T_RCD: _opened() + [(Command.READ, 0, 0)],
    Violation.T_RAS: _opened() + gap(N["ras"] - 1) + [(Command.PRECHARGE, 0, 0)],
    Violation.T_RP: _opened() + gap(N["rc"]) + [(Command.PRECHARGE, 0, 0)] + [(Command.ACTIVE, 0, 1)],
    Violation.T_RC: (_opened() + gap(N["ras"]) + [(Command.PRECHARGE, 0, 0)] + gap(SLOW_RC - N["ras"] - 1)
                     + [(Command.ACTIVE, 0, 1)]),
    Violation.T_RRD: _opened() + [(Command.ACTIVE, 1, 1)],
    Violation.T_WR: _opened() + gap(N["ras"]) + [(Command.WRITE, 0, 0, 7, 0), (Command.PRECHARGE, 0, 0)],
    Violation.T_RFC: init() + [(Command.REFRESH, 0, 0)] + gap(N["rfc"] - 1) + [(Command.ACTIVE, 0, 1)],
    Violation.T_MRD: init()[:-(N["mrd"] - 1) or None] + [(Command.ACTIVE, 0, 1)],
    Violation.BANKS_OPEN: _opened() + gap(N["rc"]) + [(Command.REFRESH, 0, 0)],
    Violation.UNSUPPORTED: init() + [(Command.LOAD_MODE, 0, mode(2, 2) | 1 << 3)],      # interleaved bursts
    Violation.ROW_OUTSIDE: init() + [(Command.ACTIVE, 0, 16)],
    # init's two refreshes are credit: the 11th interval without one is the ninth owed
    Violation.REFRESH_LATE: init() + [None] * (N["refi"] * (CHIP.postponed_refreshes + 3)),
}


def test_every_rule_has_a_case():
    assert set(BROKEN) == set(Violation) - {Violation.NONE}


@pytest.mark.parametrize("violation", sorted(BROKEN), ids=lambda v: v.name)
def test_each_broken_rule_is_flagged(violation):
    steps = BROKEN[violation]
    result, _ = run(steps, chip=CHIP_OF.get(violation, CHIP))
    assert result["violation"] == violation, result
    if violation != Violation.REFRESH_LATE:
        assert result["at"] == len(steps) - 1                # the offending command's cycle


def test_the_same_sequence_is_legal_one_cycle_later():
    """Each tight case above is broken by one cycle only: the limits are exact, not loose."""
    for violation, steps in BROKEN.items():
        if violation in (Violation.T_RCD, Violation.T_RRD, Violation.T_RFC, Violation.T_MRD, Violation.T_RAS,
                         Violation.T_WR, Violation.T_RC, Violation.T_RP):
            result, _ = run(steps[:-1] + [None] + steps[-1:], chip=CHIP_OF.get(violation, CHIP))
            assert result["violation"] == Violation.NONE, (violation, result)


def test_random_legal_traffic_reads_back_what_was_written():
    rng = random.Random(7)
    steps, expect, model = init(), {}, {}
    open_rows = {}
    for _ in range(120):
        bank, row, col = rng.randrange(4), rng.randrange(3), rng.randrange(8)
        if open_rows.get(bank) != row:
            if bank in open_rows:
                steps += gap(N["ras"]) + [(Command.PRECHARGE, bank, 0)] + gap(N["rc"])
            steps += [(Command.ACTIVE, bank, row)] + gap(max(N["rcd"], N["rrd"]))
            open_rows[bank] = row
        if rng.random() < 0.5:
            word = rng.randrange(1 << 16)
            steps.append((Command.WRITE, bank, col, word, 0))
            model[bank, row, col] = word
            steps += gap(N["wr"] + 1)
        else:
            steps.append((Command.READ, bank, col))
            expect[len(steps) - 1 + 2] = model.get((bank, row, col))
    result, seen = run(steps)
    assert result["violation"] == Violation.NONE, result
    checked = {c: w for c, w in expect.items() if w is not None}
    assert checked and all(seen[c] == w for c, w in checked.items())


AP = 1 << 10                                                # A10: auto precharge with READ or WRITE


@pytest.mark.parametrize("cmd,start", [(Command.READ, 1), (Command.WRITE, N["wr"])])
def test_auto_precharge_begins_after_the_burst(cmd, start):
    """READ (WRITE) with auto precharge late in the row's life: the precharge begins one cycle after the read
    (tWR after the write), and the bank takes ACTIVE tRP after that, not a cycle sooner."""
    late = N["ras"] + 1
    steps = _opened() + gap(late) + [(cmd, 0, 3 | AP, 0x55, 0)]
    ready = steps + gap(start + N["rp"]) + [(Command.ACTIVE, 0, 2)]
    result, _ = run(ready)
    assert result["violation"] == Violation.NONE, result
    result, _ = run(ready[:-2] + ready[-1:])
    assert result["violation"] == Violation.T_RP and result["at"] == len(ready) - 2, result


def test_auto_precharge_waits_for_tras():
    """An early READ with auto precharge: the precharge is held back until tRAS from the ACTIVE."""
    steps = _opened() + gap(N["rcd"]) + [(Command.READ, 0, AP)]
    ready = steps + gap(N["ras"] - N["rcd"] + N["rp"]) + [(Command.ACTIVE, 0, 2)]
    result, _ = run(ready)
    assert result["violation"] == Violation.NONE, result
    result, _ = run(ready[:-2] + ready[-1:])
    assert result["violation"] in (Violation.T_RP, Violation.T_RC), result


def test_refresh_waits_for_an_auto_precharge():
    steps = _opened() + gap(N["ras"] + 1) + [(Command.READ, 0, AP)]
    result, _ = run(steps + gap(1 + N["rp"]) + [(Command.REFRESH, 0, 0)])
    assert result["violation"] == Violation.NONE, result
    result, _ = run(steps + [(Command.REFRESH, 0, 0)])
    assert result["violation"] == Violation.T_RP, result


def test_reserved_mode_bits_are_refused():
    """A8 set (LiteDRAM's own SDR sequence writes 0x120, a DDR part's DLL reset) is a test mode on an SDR part."""
    for value in (0x120, mode() | 1 << 10):
        result, _ = run(init()[:-N["mrd"]] + [(Command.LOAD_MODE, 0, value)])
        assert result["violation"] == Violation.UNSUPPORTED, (hex(value), result)
    result, _ = run(init()[:-N["mrd"]] + [(Command.LOAD_MODE, 0, mode(3, 4, single_writes=True))])
    assert result["violation"] == Violation.NONE, result
