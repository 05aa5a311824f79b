"""The overlay's gateware: a sequencer that runs a program of layer descriptors (:mod:`hdl.npu.isa`) on one
sparse engine and one post unit, over the scratchpad banks, the weight store, the parameter memories and the
K^T V store of the linear attention.

It executes every descriptor kind with every post operation (REQUANT with the residual add, NEURON with
membranes across time steps, LOGITS), masks and reductions. The sparse engine updates one lane group per
cycle and the post unit posts one per cycle; a word of events costs two cycles more than its updates.

Per MATMUL descriptor, for every token ``n`` and step ``t`` (steps inner, so a neuron's membranes are those of
one token's groups)::

    LATCH    src0 word (t, n, gi) and the mask word (t, 0, gi), gi = 0 .. G_in - 1 (every bank word is
             registered as it leaves its block RAM: the read of a word is issued as the word before it
             is latched, and goes on while that one's events run)
    SCAN     each non-zero lane l of it (every lane, with ``dense``), lowest first, is an event (i = gi * P + l,
             level):
    UPDATE   acc[go] += level * weights[wbase + go * I + i] for go = 0 .. G_out - 1, one group per cycle; the
             next event is picked in the last group's cycle
    POST     per output group go, one per cycle (``post_steps`` with a narrower post unit): z = acc * mult +
             bias; REQUANT / NEURON / LOGITS; write dst (t, n, go). The post unit runs a frame's posts with its
             own loop while the engine goes on to the next frame in the other half of the accumulators (a
             frame starts on accumulators that read as 0); the next frame's posts wait for it.

ELEMENTWISE copies src0's words into acc (one per cycle), then posts.

LINEAR_ATTENTION runs the same event loop twice, head by head (a head's ``S`` = ``head_span`` groups from its
first group ``g0``, lanes outside the head masked): first, for every step and token, each event ``k[i]`` adds
``level * v[n, go]`` into the K^T V store row ``i`` (the events of k build K^T V); then, per frame as above, each
event ``q[i]`` adds ``level * KV[i, go]`` into ``acc[go]``. COSPIKE adds ``src0 * src1`` lane by lane into
``acc[g]`` over every token, per step, then posts once.

Cycles of a MATMUL frame: ``2 G_in`` (words) + ``G_out`` per event + 4, or its post's ``G_out`` + POST_LAG + 1
if that is longer, plus a few per descriptor: they grow with the spikes (:func:`descriptor_cycles`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..packing import index_bits
from ..sdram.fetch import Fetch, fetch_cycles
from ..sdram.litedram import STREAM_OVERHEAD, STREAM_WORDS_PER_CYCLE
from .isa import (DESCRIPTOR_WORDS, EXT_ALIGN, EXT_WORD_BITS, FETCH_TARGETS, WORD_BITS, Bank, Config, Kind, Mem, Post,
                  descriptor_layout, fetch_ratio, fetch_rows, row_layout)

__all__ = ["Overlay", "descriptor_cycles", "frame_count", "splits", "fetch_time", "program_cycles", "POST_FLUSH",
           "PEEK_LATENCY",
           "ExtTiming", "IDEAL", "SDRAM"]

#: The post unit's pipeline: the stage that writes (read at 0), and the cycles from a descriptor's last post
#: read to the next descriptor's fetch.
POST_STAGES = 8
POST_FLUSH = POST_STAGES - 1
#: Cycles a frame waits after its last update is issued (the accumulate pipeline's depth but one).
DRAIN = 3
#: Cycles between a MATMUL or attention frame's end and its post's first read: the frame goes on to the next
#: without DRAIN, and the post unit's first accumulator read (P1) comes after the last update's write.
POST_LAG = DRAIN - 1
#: Cycles from the peek port's address to its word (a bank word is registered as it leaves the block RAM).
PEEK_LATENCY = 2


#: Cycles from a read's command to its word in the simulated external memory (``sim.npu_amaranth``), which
#: :func:`descriptor_cycles` counts a FETCH with by default (:data:`IDEAL`). The board's SDRAM takes longer and
#: moves ``hdl.sdram.litedram.STREAM_WORDS_PER_CYCLE`` words a cycle (:data:`SDRAM`, docs/sdram.md).
EXT_LATENCY = 2


@dataclass(frozen=True)
class ExtTiming:
    """How fast an external memory streams a FETCH's words: ``words_per_cycle``, and ``overhead`` cycles beyond
    them (start, the first word's latency, the last write)."""
    words_per_cycle: float
    overhead: float

    def fetch(self, count: int, ratio: int) -> float:
        """Cycles of a fetch of ``count`` weight-store words of ``ratio`` external words each (``Fetch``'s
        :func:`~hdl.sdram.fetch.fetch_cycles` for :data:`IDEAL`)."""
        return 2 if count == 0 else count * ratio / self.words_per_cycle + self.overhead


#: The simulated memory of ``sim.npu_amaranth`` (a read a cycle, its word ``EXT_LATENCY`` later): exact,
#: ``fetch_cycles(count, ratio, EXT_LATENCY)``.
IDEAL = ExtTiming(1.0, fetch_cycles(1, 0, EXT_LATENCY))
#: LiteDRAM's controller on the board's SDRAM (measured on the device model; an estimate: whole streamed runs in
#: Verilator took 0.2% fewer cycles (digits, 256-word store), 0.24% more (dim 256, depth 4) and 0.9% fewer
#: (dim 128, depth 1, the controller at 48 MHz) than it counts).
SDRAM = ExtTiming(STREAM_WORDS_PER_CYCLE, STREAM_OVERHEAD)


def ext_ratio(config: Config) -> int:
    """External memory words per weight-store word."""
    return fetch_ratio(config, Mem.WEIGHTS)


def ext_address_bits(config: Config) -> int:
    """Bits of an external memory word address for ``config.ext_depth`` weight-store words."""
    return max(1, (config.ext_depth * ext_ratio(config) - 1).bit_length())


def frame_count(d) -> int:
    """Frames of descriptor ``d`` whose events :func:`descriptor_cycles` takes one by one: every token and
    step (tokens outer, steps inner); LINEAR_ATTENTION: those of its k pass (steps outer), then its q pass's."""
    frames = d.tokens * d.steps
    return 2 * frames if d.kind == Kind.LINEAR_ATTENTION else frames


def logit_words(config: Config) -> int:
    """Words of the logit registers (``post_width`` logits each): every post step of the lane groups that hold
    the classes, since a LOGITS post writes each of its steps' words (those past the classes too)."""
    return max(-(-config.classes // config.lanes) * config.post_steps, 2)


def dense_lanes(d, lanes: int) -> int:
    """Events of one token (of each window tap inside the grid) of a ``dense`` descriptor without a mask: every
    lane of its src0 words (a window tap's ``conv_groups`` words), LINEAR_ATTENTION's every channel of a head."""
    if d.kind == Kind.LINEAR_ATTENTION:
        return d.in_ch
    return (d.conv_groups if d.conv_k else -(-d.in_ch // lanes)) * lanes


def splits(d, config: Config) -> bool:
    """Whether the posts of descriptor ``d`` overlap its next frame: its output fits half the accumulators, and
    its engine leaves the banks' port B to the post unit's residual reads (no mask, not COSPIKE)."""
    half = config.out_groups // 2
    return half > 0 and d.out_ch <= half * config.lanes and not d.mask and d.kind != Kind.COSPIKE


def descriptor_cycles(d, config: Config, events=0, ext: ExtTiming = IDEAL) -> float:
    """Cycles of one descriptor ``d`` (``hdl.npu.isa.Descriptor``) on the overlay of ``config``, given the non-zero
    events (mask applied) that it consumes: a sequence of :func:`frame_count` per-frame counts (exact,
    ``tests/test_npu_overlay.py``), or their total over the whole run, taken as spread evenly over the frames
    (LINEAR_ATTENTION: those of k and of q; exact but where a frame is shorter than the post before it).

    Fetch and dispatch ``DESCRIPTOR_WORDS + 2`` (a FETCH's whole cost: its fetch runs beside the descriptors
    after it, :func:`program_cycles` counts the waits for it), and ``POST_FLUSH`` for the last posts to leave the
    post unit's pipeline (but END). A frame's engine cycles ``C``: MATMUL 4 (two to read its first word),
    ``2`` per src0 word (its read is issued as the previous word is latched), ``G_out`` per event;
    LINEAR_ATTENTION's q pass 4 + ``2 S heads`` + ``S`` per event (``S`` = ``head_span``), each with a post
    ``lag`` = ``POST_LAG`` cycles after the frame; ELEMENTWISE 2 + DRAIN + one per word, its post right after
    (``lag`` 0). A post takes ``G_out`` steps of the post unit (``post_steps`` cycles each), once per frame
    (once per descriptor for a reduction). When the descriptor splits (:func:`splits`) the post runs beside the
    next frame, which waits for the post unit if it ends first: a frame takes ``max(C, post + lag + 1)``,
    ``max(C, post + lag + POST_STAGES)`` if it must see the previous step's membranes; else
    ``C + post + lag`` (and ``POST_STAGES - C`` more if positive for the membranes). LINEAR_ATTENTION also
    clears the K^T V store (``T C S`` words) and runs the k pass, per token and step ``3 + DRAIN + 2 S heads``
    and ``S`` per event. COSPIKE, per step: ``4`` per word of every token, post ``G``, 2 + DRAIN."""
    if d.kind == Kind.END:
        return DESCRIPTOR_WORDS + 2
    if d.kind == Kind.FETCH:                # its dispatch: the fetch runs beside what follows (program_cycles)
        return DESCRIPTOR_WORDS + 2
    fetch = DESCRIPTOR_WORDS + 2 + POST_FLUSH
    lanes = config.lanes
    g_in, g_out = -(-d.in_ch // lanes), -(-d.out_ch // lanes)
    posted = g_out * config.post_steps        # cycles of one post
    count = frame_count(d)
    per_frame = (np.full(count, float(events) / count) if np.ndim(events) == 0
                 else np.asarray(events, dtype=float))
    if len(per_frame) != count:
        raise ValueError(f"{d.name}: {len(per_frame)} frames of events, the descriptor has {count}")
    if d.kind == Kind.COSPIKE:
        return fetch + d.steps * (4 * d.tokens * g_in + posted + 2 + DRAIN)
    extra = 0.0
    if d.kind == Kind.LINEAR_ATTENTION:
        span = d.head_span
        words = 2 * span * d.heads
        k_pass, per_frame = per_frame[:count // 2], per_frame[count // 2:]
        extra = d.steps * d.in_ch * span + len(k_pass) * (3 + DRAIN + words) + k_pass.sum() * span
        engine, lag = 4 + words + per_frame * span, POST_LAG
    elif d.kind in (Kind.ELEMENTWISE, Kind.MAXPOOL):
        engine, lag = np.full(count, float(g_in + 2 + DRAIN)), 0
    else:
        engine, lag = 4 + 2 * g_in + per_frame * g_out, POST_LAG
    if d.reduce:
        return fetch + extra + engine.sum() + posted + lag
    # a frame of a later time step whose post reads membranes waits for the previous step's writes
    later = (np.arange(len(engine)) % d.steps != 0) & (d.post == Post.NEURON)
    if splits(d, config):
        ready = np.where(later, posted + lag + POST_STAGES, posted + lag + 1)
        return fetch + extra + engine[0] + np.maximum(engine[1:], ready[1:]).sum() + posted + lag
    waits = np.where(later, np.maximum(0, POST_STAGES - engine), 0)
    return fetch + extra + (engine + posted + lag + waits).sum()


def fetch_time(d, config: Config, ext: ExtTiming = IDEAL) -> float:
    """Cycles that FETCH ``d`` keeps the fetch unit busy, from its dispatch."""
    mem = FETCH_TARGETS[d.fetch_to]
    return ext.fetch(fetch_rows(config, mem, d.in_ch), fetch_ratio(config, mem))


def program_cycles(descriptors, config: Config, events=None, ext: ExtTiming = IDEAL) -> list[float]:
    """Cycles of each descriptor of a program run from its first (``events`` per descriptor as
    :func:`descriptor_cycles` takes them), a FETCH running beside the descriptors after it: one without
    ``overlap`` (and the next FETCH, and END) waits at its dispatch (``DESCRIPTOR_WORDS + 1`` cycles after its
    start) until the fetch is done; that wait is counted in its cycles. Exact with :data:`IDEAL`
    (``tests/test_npu_overlay.py``)."""
    events = events or [0] * len(descriptors)
    now = free = 0.0                   # cycles so far; when the fetch unit is next idle
    out = []
    for d, e in zip(descriptors, events):
        dispatch = now + DESCRIPTOR_WORDS + 1
        waits = not (d.overlap and d.kind not in (Kind.FETCH, Kind.END))
        wait = max(0.0, free - dispatch) if waits else 0.0
        if d.kind == Kind.FETCH:
            free = dispatch + wait + fetch_time(d, config, ext)
        cost = descriptor_cycles(d, config, e, ext) + wait
        out.append(cost)
        now += cost
    return out


def _data(shape, **kwargs) -> Signal:
    """A datapath register: one without a reset. Its consumers wait for a valid bit or a state that the
    reset does clear, and its initial value is loaded with the bitstream. The sync domain's reset (held
    until the PLL locks) would otherwise reach each of its FFs through the fabric: the 16-lane overlay had
    22,900 FFs on that one net, the widest source of routing congestion after the post unit."""
    return Signal(shape, reset_less=True, **kwargs)


def _lanes(word, count: int, width: int, as_signed: bool) -> list:
    return [(word[l * width:(l + 1) * width].as_signed() if as_signed else word[l * width:(l + 1) * width])
            for l in range(count)]


class Overlay(wiring.Component):
    """The spiking NPU of one configuration.

    Members
    -------
    start : In(1)
        Run the program from descriptor 0 (a pulse, while not busy).
    busy, done, error : Out(1)
        Running; the last run reached END (until the next start); it stopped at a descriptor it cannot run.
    pc : Out(range(program_depth))
        The descriptor running (or where the program stopped).
    cycles : Out(32)
        Cycles of the last run.
    load_en, load_mem, load_addr, load_data : In
        Write ``load_data`` at ``load_addr`` of memory ``load_mem`` (:class:`Mem`) while not busy; program
        memory words are :data:`WORD_BITS` wide (descriptor k at ``k * DESCRIPTOR_WORDS``).
    peek_mem, peek_addr : In; peek_data : Out
        Read a scratchpad word, or a logit, :data:`PEEK_LATENCY` cycles after the address is given (while not
        busy).

    ``images`` (optional, ``{Mem: words}`` as ``compiler.hw.program.Program.images`` gives them) are the initial
    contents of those memories: a bitstream that boots into a program (``build --overlay --standalone``).
    """

    def __init__(self, config: Config, images: dict | None = None):
        self._cfg = c = config
        self._images = {Mem(k): list(v) for k, v in (images or {}).items()}
        self.max_word = max(WORD_BITS, c.lanes * max(c.spike_bits, c.wide_bits, c.weight_bits),
                            c.post_width * max(c.mult_bits, c.bias_bits, c.levels * c.theta_bits), c.logit_bits)
        self.addr_width = max(index_bits(d) for d in (c.program_depth * DESCRIPTOR_WORDS, c.spike_depth,
                                                      c.wide_depth, c.weight_depth, c.param_depth, c.classes))
        ext = {}
        if c.ext_depth:
            ext = {"ext_cmd": Out(stream.Signature(data.StructLayout({"we": 1, "addr": ext_address_bits(c)}))),
                   "ext_rdata": In(stream.Signature(EXT_WORD_BITS))}
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "pc": Out(range(max(c.program_depth, 2))), "cycles": Out(32),
            "load_en": In(1), "load_mem": In(3), "load_addr": In(self.addr_width), "load_data": In(self.max_word),
            "peek_mem": In(3), "peek_addr": In(self.addr_width), "peek_data": Out(self.max_word),
            **ext,
        })

    @property
    def config(self) -> Config:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        c = self._cfg
        P = c.lanes
        Q, R = c.post_width, c.post_steps        # the post unit: Q lanes a cycle, a group's post in R steps

        def memory(name, width, depth):
            init = self._images.get(Mem.__members__.get(name.upper()), [])
            if len(init) > depth:
                raise ValueError(f"{len(init)} initial words do not fit the {depth} of memory {name}")
            mem = Memory(shape=unsigned(width), depth=max(depth, 2), init=init)
            m.submodules[name] = mem
            return mem

        # --- memories -------------------------------------------------------------------------------
        program = memory("program", WORD_BITS, c.program_depth * DESCRIPTOR_WORDS)
        banks = {Bank.SPIKES: memory("spikes", P * c.spike_bits, c.spike_depth),
                 Bank.WIDE: memory("wide", P * c.wide_bits, c.wide_depth)}
        bits = {Bank.SPIKES: c.spike_bits, Bank.WIDE: c.wide_bits}
        weights = memory("weights", P * c.weight_bits, c.weight_depth)
        # the post unit's: a group's lanes in post_steps words of post_width lanes (Q lanes, R steps)
        mult = memory("mult", Q * c.mult_bits, c.param_depth * R)
        bias = memory("bias", Q * c.bias_bits, c.param_depth * R)
        theta = memory("theta", Q * c.levels * c.theta_bits, c.param_depth * R)
        acc = memory("acc", P * c.acc_bits, c.out_groups)
        vmem = memory("membrane", Q * c.post_bits, c.out_groups * R)
        kv = memory("kv", P * c.kv_bits, c.kv_depth)

        # load port: one write port per loadable memory (the banks share theirs with the engine)
        desc = Signal(descriptor_layout())      # the descriptor running
        loads = {Mem.PROGRAM: program, Mem.WEIGHTS: weights, Mem.MULT: mult, Mem.BIAS: bias, Mem.THETA: theta}
        if c.ext_depth:
            # FETCH: the external memory's words into the weight store or a parameter memory, while the overlay runs
            row_bits = max(values * bits for values, bits, _ in (row_layout(c, mem) for mem in FETCH_TARGETS))
            m.submodules.fetch = fetch = Fetch(row_bits, max(c.weight_depth, c.param_depth * R),
                                               sdram_bits=EXT_WORD_BITS,
                                               address_bits=ext_address_bits(c))
            fetch_to = Signal(2)                # the running FETCH's memory (the descriptors after it replace it)
            wiring.connect(m, fetch.cmd, wiring.flipped(self.ext_cmd))
            wiring.connect(m, wiring.flipped(self.ext_rdata), fetch.rdata)
        for key, mem in loads.items():
            wp = mem.write_port()
            m.d.comb += [wp.en.eq(self.load_en & (self.load_mem == key) & ~self.busy), wp.addr.eq(self.load_addr),
                         wp.data.eq(self.load_data)]
            if key in FETCH_TARGETS and c.ext_depth:
                with m.If(self.busy):
                    m.d.comb += [wp.en.eq(fetch.w_en & (fetch_to == FETCH_TARGETS.index(key))),
                                 wp.addr.eq(fetch.w_addr), wp.data.eq(fetch.w_data)]

        # --- the descriptor register ------------------------------------------------------------------
        pc = Signal(range(max(c.program_depth, 2)))
        word = Signal(range(DESCRIPTOR_WORDS + 1))
        prog_rd = program.read_port()
        pc_base = Signal(len(prog_rd.addr))    # pc * DESCRIPTOR_WORDS, stepped with pc (no multiplier)
        m.d.comb += prog_rd.addr.eq(pc_base + word)
        fetched = Signal.like(word)                # the word whose data prog_rd gives this cycle
        m.d.sync += fetched.eq(word)
        attn = desc.kind == Kind.LINEAR_ATTENTION
        cospike = desc.kind == Kind.COSPIKE

        # --- loop state -------------------------------------------------------------------------------
        n = Signal(12)
        t = Signal(4)
        gi = Signal(16)                    # input group being read
        go = Signal(12)                    # output group (clear, updates, post)
        n_gin = Signal(16)                 # groups of src0 (ceil(in_ch / P))
        n_gout = Signal(12)                # groups of dst
        lw = max(c.event_bits, c.spike_bits + 1)       # an event's level, signed: a wide element's (events of
        #                                                   event_bits, two's complement) or a spike's (unsigned)
        pending = _data(P * lw)
        levels = [pending[l * lw:(l + 1) * lw] for l in range(P)]
        live = Signal(P)                   # the word's lanes whose events are still to issue (pending's non-zero)
        level = Signal(lw)
        fresh = Signal()                   # the next word to latch is the frame's first
        phase_k = Signal()                 # LINEAR_ATTENTION: the pass over k that builds K^T V

        # the head being scanned (LINEAR_ATTENTION): channels [hs, he), hs = hs_g * P + hs_l
        h = Signal(6)
        hs_g, hs_l = Signal(12), Signal(range(max(P, 2)))
        he_g, he_l = Signal(12), Signal(range(max(P, 2)))       # he = hs + C / heads, kept in registers
        nhe_g, nhe_l = Signal(12), Signal(range(max(P, 2)))     # the next head's end, he + C / heads
        nhe_carry = Signal()                                     # nhe_l = he_l + head_lanes - P

        def plus_head(g, l):
            """(group, lane) + C / heads: (group, lane, carry)."""
            total = l + desc.head_lanes
            carry = total >= P
            return g + desc.head_groups + carry, Mux(carry, total - P, total), carry
        span = desc.head_span
        gi_last = Signal(16)               # the last word of the head (of the frame): hs_g + span - 1

        def in_head(g, lo_g=hs_g, lo_l=hs_l, hi_g=he_g, hi_l=he_l):
            """Per lane of group ``g``: its channel is in the head [lo, hi) (always, but for attention)."""
            return [~attn | (((g > lo_g) | ((g == lo_g) & (l >= lo_l))) & ((g < hi_g) | ((g == hi_g) & (l < hi_l))))
                    for l in range(P)]

        g_first = Mux(attn, hs_g, 0)                               # groups an event updates
        g_last = Mux(attn, hs_g + span - 1, n_gout - 1)
        # gi is the frame's last word, one cycle late (gi, gi_last and h move only in lead and a restart, which
        # SCAN and UPDATE, its readers, never follow)
        last_word = Signal()
        m.d.sync += last_word.eq((gi >= gi_last) & (~attn | (h + 1 >= desc.heads)))
        # the word after gi (the next head's first after a head's last): its read is issued while gi's events
        # are processed, so that it is there when they are done
        # (the next word is Mux(fresh, 0, Mux(gi < gi_last, gi + 1, he_g)), kept in a register: its inputs move
        # only in lead, which sets it, and in a restart of the heads, which clears it with fresh)
        nxt_gi = Signal(16)
        g_last_r = Signal(12)              # g_last one cycle late: it moves in lead or a restart, never read next
        m.d.sync += g_last_r.eq(g_last)
        at_g_last = Signal()               # go >= g_last_r, set with go (UPDATE's last group of an event)
        # for lead, one cycle late (lead is never next to lead, nor to a restart): gi is the head's last word;
        # the next head's last word
        at_head_end, he_last = Signal(), Signal(16)
        m.d.sync += [at_head_end.eq(gi >= gi_last), he_last.eq(he_g + span - 1)]

        kv_cs = Signal(24)                 # words of one step of the K^T V store: in_ch * span
        kv_count = Signal(28)
        kv_in, kv_t = Signal(24), Signal(4)
        # the K^T V word of (event, go), kv_word + lane * span + go - hs_g, and the weight word of (go, the event's
        # channel), w_gbase + lane + go * in_ch: each the sum of a part that a pick sets from the lane (no add after
        # the lowest lane's search) and a part that moves with go
        kv_pick, kv_go = Signal(16), Signal(28)
        kv_row = Signal(range(max(c.kv_depth, 2)))
        m.d.comb += kv_row.eq(kv_go + kv_pick)
        w_pick, w_go = Signal(range(max(P, 2))), Signal(20)
        w_addr = Signal(20)
        m.d.comb += w_addr.eq(w_go + w_pick)
        kv_word = Signal(28)               # kv_tbase + gi * P * span: row gi * P of the K^T V store
        kv_he = Signal(28)                 # kv_tbase + he_g * P * span
        pspan, hg_pspan = Signal(20), Signal(28)        # P * span, head_groups * P * span
        lane_span = Array(Signal(16, name=f"lane_span{l}") for l in range(P))   # l * span
        w_gbase = Signal(20)               # wbase + gi * P: the weight word of input channel gi * P in group 0
        kv_tbase = Signal(28)              # t * kv_cs

        # --- scratchpad ports: A (src0 / k words, src1 in the post phase), B (mask / v / cospike's src1; the
        # peek port while idle)
        rd_a = {b: mem.read_port() for b, mem in banks.items()}
        rd_b = {b: mem.read_port() for b, mem in banks.items()}
        wr = {b: mem.write_port() for b, mem in banks.items()}

        # each operand's frame address base + t * tstep + n * nstep (fb), kept with base + t * tstep (tb) and
        # base + n * nstep (nb) as the loops move, so that no address needs a multiplier
        ops = ("src0", "src1", "src2", "dst")
        tb, nb, fb = ({op: Signal(17, name=f"{op}_{k}") for op in ops} for k in ("tb", "nb", "fb"))
        bias_nb = Signal(17)               # bias_base + n * G_out (per-token biases)

        def frame_moves(how: str) -> list:
            """The registers' updates for a move of the loops: "reset" (t = n = 0), "t+1", "n+1" (t kept),
            "n+1,t=0", "t+1,n=0" or "n=0" (t kept)."""
            out = []
            for op in ops:
                base, ts, ns = (getattr(desc, f"{op}_{f}") for f in ("base", "tstep", "nstep"))
                out += {"reset": [tb[op].eq(base), nb[op].eq(base), fb[op].eq(base)],
                        "t+1": [tb[op].eq(tb[op] + ts), fb[op].eq(fb[op] + ts)],
                        "n+1": [nb[op].eq(nb[op] + ns), fb[op].eq(fb[op] + ns)],
                        "n+1,t=0": [nb[op].eq(nb[op] + ns), fb[op].eq(nb[op] + ns), tb[op].eq(base)],
                        "t+1,n=0": [tb[op].eq(tb[op] + ts), fb[op].eq(tb[op] + ts), nb[op].eq(base)],
                        "n=0": [nb[op].eq(base), fb[op].eq(tb[op])]}[how]
            out += {"reset": [kv_tbase.eq(0), bias_nb.eq(desc.bias_base)],
                    "t+1": [kv_tbase.eq(kv_tbase + kv_cs)],
                    "n+1": [bias_nb.eq(bias_nb + n_gout)],
                    "n+1,t=0": [kv_tbase.eq(0), bias_nb.eq(bias_nb + n_gout)],
                    "t+1,n=0": [kv_tbase.eq(kv_tbase + kv_cs), bias_nb.eq(desc.bias_base)],
                    "n=0": [bias_nb.eq(desc.bias_base)]}[how]
            return out

        # the window (conv_k != 0: a convolution's MATMUL, MAXPOOL). The frame's output token: ox, the window's
        # origin (iy0, ix0) and its word offset cb from the frame's step (rb: that of the row's first token).
        # The tap pointer follows the word whose read is issued next (nxt_gi; COPY: gi): its group wgc, column
        # wdx, position (wy, wx) and word offset ta (tx: the tap's first group, ty: the tap row's first tap).
        # Every move is an add: stride * nstep (sx) and stride * rowstep (sy) are registered products.
        windowed = desc.conv_k != 0
        ox = Signal(9)
        iy0, ix0, wy, wx = (Signal(signed(11), name=n_) for n_ in ("iy0", "ix0", "wy", "wx"))
        cb, rb, ta, tx, ty = (Signal(signed(19), name=n_) for n_ in ("win_cb", "win_rb", "win_ta", "win_tx", "win_ty"))
        wgc, wdx = Signal(8), Signal(3)
        sx, sy = Signal(19), Signal(19)
        ox_wrap = Signal()                 # ox + 1 == out_width, one cycle late (ox moves only as a frame starts)
        m.d.sync += ox_wrap.eq(ox + 1 == desc.out_width)
        m.d.sync += [sx.eq(desc.conv_stride * desc.src0_nstep), sy.eq(desc.conv_stride * desc.conv_rowstep)]
        in_grid = (wy >= 0) & (wy < desc.in_height) & (wx >= 0) & (wx < desc.in_width)

        def window_at(offset, x0, y0) -> list:
            """The tap pointer to the first tap of a window at word offset ``offset``, origin (y0, x0)."""
            return [wgc.eq(0), wdx.eq(0), ta.eq(offset), tx.eq(offset), ty.eq(offset), wx.eq(x0), wy.eq(y0)]

        def window_moves(how: str) -> list:
            """The window's registers for a frame move: "reset" (token 0), "t+1" (the same token) or "n+1"."""
            if how == "reset":
                origin = -desc.conv_origin
                pad = -desc.conv_pad
                return [ox.eq(0), ix0.eq(pad), iy0.eq(pad), rb.eq(origin), cb.eq(origin),
                        *window_at(origin, pad, pad)]
            if how == "t+1":
                return window_at(cb, ix0, iy0)
            wrap = ox_wrap
            new_cb = Mux(wrap, rb + sy, cb + sx)
            new_x0 = Mux(wrap, -desc.conv_pad, ix0 + desc.conv_stride)
            new_y0 = Mux(wrap, iy0 + desc.conv_stride, iy0)
            return [ox.eq(Mux(wrap, 0, ox + 1)), rb.eq(Mux(wrap, rb + sy, rb)), cb.eq(new_cb), ix0.eq(new_x0),
                    iy0.eq(new_y0), *window_at(new_cb, new_x0, new_y0)]

        def window_step():
            """The tap pointer to the next word: the tap's next group, else the next tap."""
            with m.If(wgc + 1 < desc.conv_groups):
                m.d.sync += [wgc.eq(wgc + 1), ta.eq(ta + 1)]
            with m.Elif(wdx + 1 < desc.conv_k):
                m.d.sync += [wgc.eq(0), wdx.eq(wdx + 1), wx.eq(wx + 1), tx.eq(tx + desc.src0_nstep),
                             ta.eq(tx + desc.src0_nstep)]
            with m.Else():
                m.d.sync += [wgc.eq(0), wdx.eq(0), wy.eq(wy + 1), wx.eq(ix0), ty.eq(ty + desc.conv_rowstep),
                             tx.eq(ty + desc.conv_rowstep), ta.eq(ty + desc.conv_rowstep)]

        # the post unit's own loop (it runs a frame's posts while the engine runs the next frame): the group and
        # step it reads, and what it took from the frame as it started: the dst, residual and bias bases, the
        # first time step (no membrane before it), the accumulators' half
        p_active = Signal()
        p_delay = Signal(range(POST_LAG + 1))     # cycles until a post started by a MATMUL or attention frame reads
        p_go, p_r = Signal(12), Signal(range(max(R, 2)))
        p_dst, p_src1, p_bias = Signal(17), Signal(17), Signal(17)
        p_first = Signal()
        H = c.out_groups // 2              # accumulator words of a half (the engine's and the post unit's)
        eng_off, post_off = Signal(range(c.out_groups + 1)), Signal(range(c.out_groups + 1))
        split = Signal()                   # the descriptor's posts overlap its next frame (set at DISPATCH)

        ev_g = Mux(desc.kind == Kind.MATMUL, nxt_gi, Mux(attn, nxt_gi, gi))   # prefetch; COPY and COSPIKE: gi
        src0_addr = Mux(windowed, tb["src0"] + ta, fb["src0"] + ev_g)
        pa_addr = Mux(phase_k, fb["src1"] + ev_g, src0_addr)
        # port B: the post unit's residual word while it reads (it has the port: a descriptor whose engine reads
        # port B, a mask or COSPIKE's src1, does not overlap its posts with its next frame)
        # (a mask is MATMUL's only, read as its src0 word: nxt_gi straight into the add, which was the 85F build's
        # critical path at every seed, through ev_g's choice)
        pb_addr = Mux(p_active, p_src1 + p_go,
                      Mux(cospike, fb["src1"] + gi, Mux(phase_k, fb["src2"] + go, tb["src2"] + nxt_gi)))
        for b in banks:
            m.d.comb += [rd_a[b].addr.eq(pa_addr), rd_b[b].addr.eq(Mux(self.busy, pb_addr, self.peek_addr))]

        # every bank word is registered as it leaves the block RAM (no logic after a DP16KD's slow output): its
        # users take it two cycles after its address
        qa = {b: _data(len(p.data), name=f"{b.name.lower()}_qa") for b, p in rd_a.items()}
        qb = {b: _data(len(p.data), name=f"{b.name.lower()}_qb") for b, p in rd_b.items()}
        m.d.sync += [*(qa[b].eq(rd_a[b].data) for b in banks), *(qb[b].eq(rd_b[b].data) for b in banks)]

        def lanes_of_words(word_by_bank, bank_sel, as_signed):
            spk = _lanes(word_by_bank[Bank.SPIKES], P, bits[Bank.SPIKES], False)
            wid = _lanes(word_by_bank[Bank.WIDE], P, bits[Bank.WIDE], as_signed)
            return [Mux(bank_sel == Bank.WIDE, w, s) for s, w in zip(spk, wid)]

        src0_vals = lanes_of_words(qa, desc.src0_bank, True)       # ELEMENTWISE and COSPIKE values (signed if wide)
        ev_bank = Mux(phase_k, desc.src1_bank, desc.src0_bank)
        ev_lvls = [Mux(ev_bank == Bank.WIDE, qa[Bank.WIDE][l * c.wide_bits:][:c.event_bits].as_signed(),
                       qa[Bank.SPIKES][l * c.spike_bits:][:c.spike_bits]) for l in range(P)]
        # LATCH registers the word's levels and its live lanes (a level, in the head it is read for, not masked
        # out: the bank's choice and a comparison after the banks' registered words); SCAN picks its events
        mask_bits = [v != 0 for v in lanes_of_words(qb, desc.src2_bank, False)]
        src1_vals = lanes_of_words(qb, desc.src1_bank, True)         # the post unit's residual word
        b_vals = lanes_of_words(qb, desc.src1_bank, True)           # COSPIKE's second operand
        v_vals = lanes_of_words(qb, desc.src2_bank, True)           # the k pass's v word

        # the peek port: the word two cycles after its address (registered, as every bank word)
        peek_mem = Signal.like(self.peek_mem)
        m.d.sync += peek_mem.eq(self.peek_mem)
        m.d.comb += self.peek_data.eq(Mux(peek_mem == Mem.WIDE, qb[Bank.WIDE], qb[Bank.SPIKES]))
        # the logits: the post unit's words (logit k is lane k % Q of word k // Q), written by a LOGITS post
        logits = Memory(shape=unsigned(Q * c.logit_bits), depth=logit_words(c), init=[])
        m.submodules.logits = logits
        logit_rd, logit_wr = logits.read_port(transparent_for=()), logits.write_port()
        peek_lane, peek_lane2 = Signal(range(max(Q, 2))), Signal(range(max(Q, 2)))
        if Q & (Q - 1) == 0:              # a power of two: the address's bits (a divider otherwise)
            logit_word, logit_lane = self.peek_addr[Q.bit_length() - 1:], self.peek_addr[:Q.bit_length() - 1]
        else:
            logit_word, logit_lane = self.peek_addr // Q, self.peek_addr % Q
        m.d.comb += logit_rd.addr.eq(logit_word)
        logit_q = _data(len(logit_rd.data))
        m.d.sync += [peek_lane.eq(logit_lane), peek_lane2.eq(peek_lane), logit_q.eq(logit_rd.data)]
        with m.If(peek_mem == Mem.LOGITS):
            m.d.comb += self.peek_data.eq(Array(_lanes(logit_q, Q, c.logit_bits, True))[peek_lane2])

        # --- the accumulate pipeline ------------------------------------------------------------------
        # I issue the operand's read (weight word, v word, K^T V word) and the K^T V target's | D the words
        # registered as they leave the block RAMs (no logic after a DP16KD's slow output) | X the operand chosen |
        # M level x operand, the target read | A add to the target, write. A K^T V word is never updated twice
        # within the pipeline (one event per channel and token, tokens apart).
        # The accumulators are distributed RAM, written by the engine only, with a read port for the engine and
        # one for the post unit, each addressed by a register (acc_ra, post_ra). The engine reads a word in one
        # cycle (R) and writes it in the next (W), from the word registered (acc_q), or from the word written in
        # R's cycle when that was the same one (acc_fwd): no read, add and write in one cycle. R and W are the
        # update's M and A, the copy's mid and valid cycles, CO_MUL and CO_ADD; the post unit reads at P1.
        # A word whose bit in `touched` is clear reads as 0: a frame starts on cleared accumulators without a
        # write. With `split`, the engine and the post unit use two halves of H words, swapped as a post starts
        # (eng_off, post_off): the post unit reads one frame's while the engine accumulates the next.
        w_rd = weights.read_port()
        acc_ard = acc.read_port(domain="comb")
        acc_prd = acc.read_port(domain="comb")
        acc_wr = acc.write_port()
        acc_ra = _data(len(acc_ard.addr), name="acc_ra")
        post_ra = _data(len(acc_prd.addr), name="post_ra")
        acc_q, acc_last = _data(len(acc_ard.data), name="acc_q"), _data(len(acc_wr.data), name="acc_last")
        acc_fwd = _data(1, name="acc_fwd")
        touched = Signal(max(c.out_groups, 2))
        touch_clr = Signal.like(touched)         # this cycle's clears (a half as a post starts, all as one ends)
        touch_wipe = Signal()                    # clear every bit (registered: a post that did not split ended)
        m.d.comb += [acc_ard.addr.eq(acc_ra), acc_prd.addr.eq(post_ra)]
        m.d.sync += [acc_q.eq(Mux(touched.bit_select(acc_ra, 1), acc_ard.data, 0)), acc_last.eq(acc_wr.data),
                     acc_fwd.eq(acc_wr.en & (acc_wr.addr == acc_ra)), touch_wipe.eq(0),
                     touched.eq((touched | Mux(acc_wr.en, Const(1, len(touched)) << acc_wr.addr, 0))
                                & ~Mux(touch_wipe, (1 << len(touched)) - 1, touch_clr))]
        kv_rd = kv.read_port(transparent_for=())
        kv_wr = kv.write_port()
        issue = Signal()
        tw = max(c.acc_bits, c.kv_bits)
        ow = max(c.weight_bits, c.kv_bits, c.wide_bits + 1, c.spike_bits + 1)
        d_valid, d_kv, d_attn, d_level, d_mask = Signal(), Signal(), Signal(), _data(lw), _data(P)
        d_addr = _data(max(12, len(kv_row)))
        x_valid, x_kv, x_attn, x_level, x_mask = Signal(), Signal(), Signal(), _data(lw), _data(P)
        x_addr = Signal.like(d_addr)
        x_w, x_kvd = _data(P * c.weight_bits), _data(P * c.kv_bits)      # the block RAMs' words, registered
        x_v = v_vals                       # the v word, registered as it left its bank (at X)
        m_valid, m_kv, m_level, m_addr = Signal(), Signal(), _data(signed(lw)), Signal.like(d_addr)
        m_op = [_data(signed(ow), name=f"m_op{l}") for l in range(P)]
        m_old = _data(P * c.kv_bits)
        a_valid, a_kv, a_addr = Signal(), Signal(), Signal.like(d_addr)
        a_prod = [_data(signed(ow + lw + 1), name=f"a_prod{l}") for l in range(P)]
        a_old = _data(P * c.kv_bits)
        m.d.sync += [d_valid.eq(issue), d_kv.eq(phase_k), d_attn.eq(attn), d_level.eq(level),
                     d_addr.eq(Mux(phase_k, kv_row, go + eng_off)), d_mask.eq(Cat(*in_head(go))),
                     x_valid.eq(d_valid), x_kv.eq(d_kv), x_attn.eq(d_attn), x_level.eq(d_level), x_addr.eq(d_addr),
                     x_mask.eq(d_mask), x_w.eq(w_rd.data), x_kvd.eq(kv_rd.data),
                     m_valid.eq(x_valid), m_kv.eq(x_kv), m_level.eq(x_level), m_addr.eq(x_addr), m_old.eq(x_kvd),
                     a_valid.eq(m_valid), a_kv.eq(m_kv), a_addr.eq(m_addr), a_old.eq(m_old)]
        m.d.comb += [w_rd.addr.eq(w_addr), kv_rd.addr.eq(kv_row)]
        w_lanes = _lanes(x_w, P, c.weight_bits, True)
        kv_lanes = _lanes(x_kvd, P, c.kv_bits, True)
        for l in range(P):
            m.d.sync += [m_op[l].eq(Mux(x_kv, Mux(x_mask[l], x_v[l], 0), Mux(x_attn, kv_lanes[l], w_lanes[l]))),
                         a_prod[l].eq(m_level * m_op[l])]
        acc_post = _lanes(Mux(touched.bit_select(post_ra, 1), acc_prd.data, 0), P, c.acc_bits, True)   # at P1
        acc_old = _lanes(Mux(acc_fwd, acc_last, acc_q), P, c.acc_bits, True)   # at W
        old_kv = _lanes(a_old, P, c.kv_bits, True)
        sums = [(Mux(a_kv, k, a) + x)[:tw] for a, k, x in zip(acc_old, old_kv, a_prod)]

        # writes into acc: the update stage, ELEMENTWISE's copy, COSPIKE's products, or the post unit's clear
        # (every accumulator a descriptor uses is 0 again once its post has read it: no clear before a frame)
        # ELEMENTWISE's copy: read (gi) | the bank's word | registered as it leaves the bank, acc read (R) | the
        # word's lanes registered, written into acc (W) (all within the frame's DRAIN)
        # (MAXPOOL: the window's word, 0 outside the grid, into its group wgc as the lanes' maximum)
        copy_issue, copy_read, copy_mid, copy_valid = Signal(), Signal(), Signal(), Signal()
        copy_g1, copy_g2, copy_g = Signal(12), Signal(12), Signal(12)
        copy_in1, copy_in2 = Signal(), Signal()
        copy_next = Mux(windowed, wgc, gi)
        m.d.sync += [copy_read.eq(copy_issue), copy_mid.eq(copy_read), copy_valid.eq(copy_mid),
                     copy_g1.eq(copy_next + eng_off), copy_g2.eq(copy_g1), copy_g.eq(copy_g2),
                     copy_in1.eq(~windowed | in_grid), copy_in2.eq(copy_in1)]
        maxpool = desc.kind == Kind.MAXPOOL
        co_add = Signal()              # in CO_ADD: a register set in CO_MUL, so no state decode before the address
        # CO_ADD's loop conditions, one cycle late (gi and n move only in CO_ADD, which comes 3 cycles after)
        co_more_g, co_more_n = Signal(), Signal()
        m.d.sync += [co_more_g.eq(gi + 1 < n_gin), co_more_n.eq(n + 1 < desc.tokens)]
        m.d.sync += co_add.eq(0)
        copy_lanes = [_data(signed(c.acc_bits), name=f"copy{l}") for l in range(P)]   # the word at copy_valid
        m.d.sync += [x.eq(Mux(copy_in2, v, 0)) for x, v in zip(copy_lanes, src0_vals)]
        co_x, co_y = src0_vals, b_vals                                     # both words, at CO_MUL
        co_p = [_data(signed(len(x) + len(y)), name=f"co_p{l}") for l, (x, y) in enumerate(zip(co_x, co_y))]
        m.d.sync += [p_.eq(x * y) for p_, x, y in zip(co_p, co_x, co_y)]       # CO_MUL: the product registered
        co_sums = Cat(*((a + p_)[:c.acc_bits] for a, p_ in zip(acc_old, co_p)))
        upd_acc = a_valid & ~a_kv
        # R: the update's M (x_addr moves there), the copy's mid cycle, CO_MUL
        m.d.sync += acc_ra.eq(Mux(x_valid, x_addr, Mux(copy_read, copy_g1, go)))
        # MAXPOOL's values are spike levels (the compiler pools the spike bank only): compared in spike_bits bits
        sb = c.spike_bits
        copy_word = Cat(*(Mux(maxpool & (a[:sb] > x[:sb]), a, x)[:c.acc_bits] for a, x in zip(acc_old, copy_lanes)))
        m.d.comb += [acc_wr.addr.eq(Mux(upd_acc, a_addr, Mux(copy_valid, copy_g, go))),
                     acc_wr.en.eq(upd_acc | copy_valid | co_add),
                     acc_wr.data.eq(Mux(upd_acc, Cat(*(x[:c.acc_bits] for x in sums)),
                                        Mux(copy_valid, copy_word, co_sums)))]
        kv_clr = Signal()
        m.d.comb += [kv_wr.addr.eq(Mux(kv_clr, kv_count, a_addr)), kv_wr.en.eq(kv_clr | (a_valid & a_kv)),
                     kv_wr.data.eq(Mux(kv_clr, 0, Cat(*(x[:c.kv_bits] for x in sums))))]

        # --- the post unit: a pipeline of Q lanes (one step of a group) per cycle --------------------------
        # P0 read parameters, membrane, residual (p_go) | P1 the words registered (the residual's at P2, as every
        # bank word), acc[p_go] read |
        # P2 acc * mult | P3 z = + bias | P4 V - (V >> leak), z >> shift | P5 H = + z, saturate |
        # P6 count thresholds, the residual add | P7 its saturation, the output | P8 write
        mult_rd, bias_rd, theta_rd = mult.read_port(), bias.read_port(), theta.read_port()
        v_rd, v_wr = vmem.read_port(), vmem.write_port()

        def stepped(group, step):
            """The post unit's word of lane group ``group``, step ``step``."""
            return group * R + step if R > 1 else group
        m.d.comb += [mult_rd.addr.eq(stepped(desc.mult_base + p_go, p_r)),
                     bias_rd.addr.eq(stepped(p_bias + p_go, p_r)),
                     v_rd.addr.eq(stepped(p_go, p_r))]
        m.d.sync += post_ra.eq(p_go + post_off)
        W = POST_STAGES                  # the stage that writes
        valid = [p_active] + [Signal(name=f"post_valid{k}") for k in range(1, W + 1)]
        pgo = [p_go] + [_data(12, name=f"post_go{k}") for k in range(1, W + 1)]
        dst_w = len(desc.dst_base) + 1
        pdst = [p_dst + p_go] + [_data(dst_w, name=f"post_dst{k}") for k in range(1, W + 1)]
        pr = [p_r] + [_data(len(p_r), name=f"post_r{k}") for k in range(1, W + 1)]
        for k in range(1, W + 1):
            m.d.sync += [valid[k].eq(valid[k - 1]), pgo[k].eq(pgo[k - 1]), pdst[k].eq(pdst[k - 1]), pr[k].eq(pr[k - 1])]
        post_go, post_write, post_step = pgo[W], valid[W], pr[W]
        last_step = [(r == R - 1) if R > 1 else Const(1) for r in pr]       # a group's last step, by stage
        # the thresholds are read at P4 (theta_base is the descriptor's: it holds until the pipeline drains), so
        # that one register, not five, brings them to P6
        m.d.comb += theta_rd.addr.eq(stepped(desc.theta_base + pgo[4], pr[4]))
        # the post unit's loop: a step of a group a cycle, from a start in WORDS_DONE (POST_LAG cycles later for a
        # MATMUL or attention frame, which comes to WORDS_DONE without DRAIN)
        post_claimed = p_active | (p_delay != 0)
        with m.If(p_delay != 0):
            m.d.sync += p_delay.eq(p_delay - 1)
            with m.If(p_delay == 1):
                m.d.sync += p_active.eq(1)
        with m.If(p_active):
            if R > 1:
                m.d.sync += p_r.eq(p_r + 1)
            with m.If(last_step[0]):
                m.d.sync += [p_go.eq(p_go + 1), p_r.eq(0)]
                with m.If(p_go + 1 >= n_gout):
                    m.d.sync += p_active.eq(0)
        # the saturation bounds of the descriptor, computed once (DISPATCH)
        sat_hi, sat_lo, add_hi, add_lo = (Signal(signed(c.post_bits + 1), name=n_) for n_ in
                                          ("sat_hi", "sat_lo", "add_hi", "add_lo"))
        set_bounds = Signal()
        with m.If(set_bounds):
            half = ((Const(1, c.post_bits + 2) << desc.sat) >> 1).as_signed()
            ahalf = ((Const(1, c.post_bits + 2) << desc.add_width) >> 1).as_signed()
            m.d.sync += [sat_hi.eq(half - 1), sat_lo.eq(-half), add_hi.eq(ahalf - 1), add_lo.eq(-ahalf)]
        mult_l = _lanes(mult_rd.data, Q, c.mult_bits, True)
        bias_l = _lanes(bias_rd.data, Q, c.bias_bits, True)
        v_l = _lanes(v_rd.data, Q, c.post_bits, True)

        def step_lanes(values, k):
            """The Q of a group's P values that step pr[k] (stage Pk) computes."""
            return [Array(values[r * Q + l] for r in range(R))[pr[k]] if R > 1 else values[l] for l in range(Q)]
        # the accumulators' word is read at P1 (post_ra is p_go of P0)
        acc_p1, src1_q = step_lanes(acc_post, 1), step_lanes(src1_vals, 2)     # the residual's word at P2
        th_bits = Q * c.levels * c.theta_bits
        th = _data(th_bits, name="post_theta")            # at P6: read at P4, the block RAM's word at P5
        m.d.sync += th.eq(theta_rd.data)
        th_w = _lanes(th, Q * c.levels, c.theta_bits, True)
        ys, vs = [], []
        for l in range(Q):
            prod, bias1, vm1, res1 = (_data(signed(c.post_bits), name=f"prod{l}"),
                                      _data(signed(c.bias_bits), name=f"bias{l}"),
                                      _data(signed(c.post_bits), name=f"vm1_{l}"),
                                      _data(signed(c.wide_bits + 1), name=f"res1_{l}"))
            acc1, mult1, bias0, vm0 = (_data(signed(c.acc_bits), name=f"acc1_{l}"),
                                       _data(signed(c.mult_bits), name=f"mult1_{l}"),
                                       _data(signed(c.bias_bits), name=f"bias0_{l}"),
                                       _data(signed(c.post_bits), name=f"vm0_{l}"))
            m.d.sync += [acc1.eq(acc_p1[l]), mult1.eq(mult_l[l]), bias0.eq(bias_l[l]),
                         vm0.eq(Mux(p_first, 0, v_l[l]))]
            m.d.sync += [prod.eq(acc1 * mult1), bias1.eq(bias0), vm1.eq(vm0), res1.eq(src1_q[l])]
            z, vm2, res2 = (_data(signed(c.post_bits), name=f"z{l}"), Signal.like(vm1, name=f"vm2_{l}"),
                            Signal.like(res1, name=f"res2_{l}"))
            m.d.sync += [z.eq(prod + bias1), vm2.eq(vm1), res2.eq(res1)]
            # P4: the shifts
            leaked, z3, shifted, res3 = (_data(signed(c.post_bits), name=f"leaked{l}"),
                                         _data(signed(c.post_bits), name=f"z3_{l}"),
                                         _data(signed(c.post_bits), name=f"shifted{l}"),
                                         Signal.like(res1, name=f"res3_{l}"))
            m.d.sync += [leaked.eq(vm2 - (vm2 >> desc.leak)), z3.eq(z), shifted.eq(z >> desc.shift), res3.eq(res2)]
            # P5: the membrane, the saturation
            hm, rq, res4 = (_data(signed(c.post_bits), name=f"h{l}"), _data(signed(c.post_bits + 1), name=f"rq{l}"),
                            Signal.like(res1, name=f"res4_{l}"))
            m.d.sync += [hm.eq(leaked + z3), res4.eq(res3),
                         rq.eq(Mux(desc.sat == 0, shifted,
                                   Mux(shifted > sat_hi, sat_hi, Mux(shifted < sat_lo, sat_lo, shifted))))]
            # P6: the thresholds compared, the residual added | P7: the comparisons counted, the sum saturated,
            # the output chosen | P8 written
            above, hm6 = _data(c.levels, name=f"above{l}"), Signal.like(hm, name=f"h6_{l}")
            added, rq6 = _data(signed(c.post_bits + 2), name=f"added{l}"), Signal.like(rq, name=f"rq6_{l}")
            # the comparisons registered, counted at P7 (their carry chains and the count's adds in one cycle
            # were the 2-lane overlay's critical path at 95 MHz)
            m.d.sync += [above.eq(Cat(*(hm >= th_w[l * c.levels + k] for k in range(c.levels)))),
                         hm6.eq(hm), added.eq(rq + res4), rq6.eq(rq)]
            res = Mux(added > add_hi, add_hi, Mux(added < add_lo, add_lo, added))
            y, v = _data(signed(c.post_bits + 1), name=f"y{l}"), _data(signed(c.post_bits), name=f"v{l}")
            count = sum(above[k].as_unsigned() for k in range(c.levels))
            m.d.sync += [y.eq(Mux(desc.post == Post.NEURON, count, Mux(desc.add, res, rq6))),
                         v.eq(Mux(above == 0, hm6, 0))]
            ys.append(y)
            vs.append(v)
        m.d.comb += [v_wr.addr.eq(stepped(post_go, post_step)),
                     v_wr.data.eq(Cat(*(v.as_signed()[:c.post_bits] for v in vs))),
                     v_wr.en.eq(post_write & (desc.post == Post.NEURON))]
        # a group's word is written at its last step: the earlier steps' outputs wait in a shift register
        yw = max(bits.values())
        held = [_data(signed(yw), name=f"post_held{k}") for k in range(P - Q)]
        if held:
            with m.If(post_write):
                m.d.sync += [h_.eq(v) for h_, v in zip(held, held[Q:] + ys)]
        outs = held + ys
        # lanes past out_ch (the last group's padding) are written as 0
        post_room = _data(signed(len(desc.out_ch) + 1), name="post_room")     # out_ch - post_go * P, at P8
        m.d.sync += post_room.eq(desc.out_ch - pgo[W - 1] * P)
        lane_used = [post_room > l for l in range(P)]
        for b in banks:
            data_word = Cat(*(Mux(u, y[:bits[b]], 0) for u, y in zip(lane_used, outs)))
            is_dst = (desc.dst_bank == b) & (desc.post != Post.LOGITS)
            m.d.comb += [wr[b].en.eq(Mux(self.busy, post_write & last_step[W] & is_dst,
                                         self.load_en & (self.load_mem == (Mem.SPIKES if b == Bank.SPIKES
                                                                            else Mem.WIDE)))),
                         wr[b].addr.eq(Mux(self.busy, pdst[W], self.load_addr)),
                         wr[b].data.eq(Mux(self.busy, data_word, self.load_data))]
        m.d.comb += [logit_wr.en.eq(post_write & (desc.post == Post.LOGITS)),
                     logit_wr.addr.eq(stepped(post_go, post_step)),
                     logit_wr.data.eq(Cat(*(y[:c.logit_bits] for y in ys)))]
        # writes still to come after this cycle (valid[1:W] any), registered from the stages before them: the
        # post unit lies across the die from the sequencer, whose state it gates
        post_busy = Signal()
        m.d.sync += post_busy.eq(Cat(*valid[0:W - 1]).any())

        # --- the sequencer ------------------------------------------------------------------------------
        m.d.comb += [self.pc.eq(pc)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        # one cycle late: t and n move only where a frame ends or starts, never read in the next cycle
        frame_end_t, frame_end_n, later_step = Signal(), Signal(), Signal()
        m.d.sync += [frame_end_t.eq(t + 1 == desc.steps), frame_end_n.eq((n + 1 == desc.tokens) | cospike),
                     later_step.eq((t != 0) & (desc.post == Post.NEURON))]
        n2_g, n2_l, n2_c = plus_head(desc.head_groups, desc.head_lanes)
        restart_heads = [h.eq(0), hs_g.eq(0), hs_l.eq(0), he_g.eq(desc.head_groups), he_l.eq(desc.head_lanes),
                         nhe_g.eq(n2_g), nhe_l.eq(n2_l), nhe_carry.eq(n2_c),
                         gi_last.eq(Mux(attn, span - 1, (desc.in_ch + P - 1) // P - 1)), gi.eq(0), go.eq(0),
                         nxt_gi.eq(0)]
        # the word's events still to issue (set by LATCH, each pick clears one), the lowest one-hot (live & -live:
        # a carry chain straight from the register) and its index
        onehot = Signal(P)
        m.d.comb += onehot.eq(live & (~live + 1))
        lowest = Signal(range(max(P, 2)))
        m.d.comb += lowest.eq(Cat(*(Cat(*(onehot[l] for l in range(P) if l >> k & 1)).any()
                                    for k in range(len(lowest)))) if P > 1 else 0)

        def one_of(values):
            """values[lowest], as an AND-OR over the one-hot lanes."""
            width = max(len(Value.cast(v)) for v in values)
            return Cat(*(Cat(*(Value.cast(v)[b] & onehot[l] if b < len(Value.cast(v)) else 0
                              for l, v in enumerate(values))).any() for b in range(width)))

        def pick():
            """The lowest live event of the word becomes the one issued next, from its head's first group."""
            m.d.sync += [level.eq(one_of(levels)), go.eq(g_first), at_g_last.eq(g_first >= g_last_r),
                         w_pick.eq(lowest), w_go.eq(w_gbase), kv_pick.eq(one_of(lane_span)), kv_go.eq(kv_word),
                         live.eq(live & ~onehot)]
            m.next = "UPDATE"

        # the word latched next: its lanes in the head it is read for, and whether it is inside the grid (a
        # window's tap), set as it becomes the word latched next (lead)
        word_used, word_grid = Signal(P), Signal()

        def lead():
            """Into LATCH, whose word's read was issued two cycles before (the read of the next word, gi' =
            nxt_gi, goes on for it): that word's head, K^T V row, weight base and tap are set here, and the read
            of the word after it is issued."""
            advance = ~fresh & attn & at_head_end
            # the lanes of the head the word is read for: this one's or the next one's, both compared
            used = [Mux(advance, a, b) for a, b in zip(in_head(nxt_gi, he_g, he_l, nhe_g, nhe_l),
                                                       in_head(nxt_gi, hs_g, hs_l, he_g, he_l))]
            m.d.sync += [word_used.eq(Cat(*used)), word_grid.eq(~windowed | in_grid), fresh.eq(0)]
            # the word after this one, from the head bounds this cycle leaves
            more = Mux(advance, nxt_gi < he_last, nxt_gi < gi_last)
            m.d.sync += nxt_gi.eq(Mux(more, nxt_gi + 1, Mux(advance, nhe_g, he_g)))
            with m.If(fresh):
                m.d.sync += [kv_word.eq(kv_tbase), kv_he.eq(kv_tbase + hg_pspan)]
            with m.Elif(advance):
                n3_g, n3_l, n3_c = plus_head(nhe_g, nhe_l)
                m.d.sync += [h.eq(h + 1), hs_g.eq(he_g), hs_l.eq(he_l), he_g.eq(nhe_g), he_l.eq(nhe_l),
                             nhe_g.eq(n3_g), nhe_l.eq(n3_l), nhe_carry.eq(n3_c), gi_last.eq(he_g + span - 1),
                             kv_word.eq(kv_he), kv_he.eq(kv_he + hg_pspan + Mux(nhe_carry, pspan, 0))]
            with m.Else():
                m.d.sync += kv_word.eq(kv_word + pspan)
            m.d.sync += [gi.eq(nxt_gi), w_gbase.eq(desc.wbase + nxt_gi * P)]
            with m.If(windowed):
                window_step()
            m.next = "LATCH"

        def words_done():
            """Past the frame's last word: the k pass drains its updates into the K^T V store first; a MATMUL or
            q-pass frame goes on, its post's first read POST_LAG cycles after its last update's write."""
            with m.If(phase_k):
                m.next = "DRAIN_A"
            with m.Else():
                m.next = "WORDS_DONE"

        def frame(how: str):
            """Start a frame (token ``n``, step ``t``; ``how`` it moved, for the window: "reset", "t+1", "n+1"):
            its first word, its copy, or its COSPIKE sum."""
            m.d.sync += [fresh.eq(1), *restart_heads, *window_moves(how)]
            with m.Switch(desc.kind):
                with m.Case(Kind.ELEMENTWISE, Kind.MAXPOOL):
                    m.next = "COPY"
                with m.Case(Kind.COSPIKE):
                    m.next = "CO_READ"
                with m.Default():
                    m.next = "FIRST"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.done.eq(0), self.error.eq(0), pc.eq(0), pc_base.eq(0),
                                 word.eq(0), self.cycles.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # word k is read in the cycle after its address: collect words 0 .. DW-1
                m.d.sync += word.eq(word + 1)
                with m.If(word != 0):
                    m.d.sync += desc.as_value().word_select(fetched, WORD_BITS).eq(prog_rd.data)
                with m.If(word == DESCRIPTOR_WORDS):
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                # with an external memory, a descriptor waits here while a FETCH runs (but one with overlap)
                ready = Const(1)
                if c.ext_depth:
                    ready = ~fetch.busy | (desc.overlap & (desc.kind != Kind.FETCH) & (desc.kind != Kind.END))
                with m.If(ready):
                    m.d.comb += set_bounds.eq(1)
                    m.d.sync += frame_moves("reset")
                    m.d.sync += [pspan.eq(P * span), hg_pspan.eq(desc.head_groups * P * span),
                                 *(lane_span[l].eq(l * span) for l in range(P))]
                    m.d.sync += split.eq((H > 0) & (desc.out_ch <= H * P) & ~desc.mask & ~cospike)
                    m.d.sync += [n.eq(0), t.eq(0), kv_count.eq(0), kv_in.eq(0), kv_t.eq(0),
                                 kv_cs.eq(desc.in_ch * span), n_gin.eq((desc.in_ch + P - 1) // P),
                                 n_gout.eq((desc.out_ch + P - 1) // P)]
                    with m.Switch(desc.kind):
                        with m.Case(Kind.END):
                            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                            m.next = "IDLE"
                        with m.Case(Kind.MATMUL, Kind.ELEMENTWISE, Kind.COSPIKE, Kind.MAXPOOL):
                            frame("reset")
                        with m.Case(Kind.LINEAR_ATTENTION):
                            m.d.sync += [phase_k.eq(1), fresh.eq(1), *restart_heads]
                            m.next = "KV_CLEAR"
                        if c.ext_depth:
                            with m.Case(Kind.FETCH):     # started, and the program goes on beside it
                                weights_to = desc.fetch_to == FETCH_TARGETS.index(Mem.WEIGHTS)
                                ratios = Array(Const(fetch_ratio(c, mem), len(fetch.ratio)) for mem in FETCH_TARGETS)
                                m.d.comb += [fetch.start.eq(1), fetch.src.eq(desc.ext_base * EXT_ALIGN),
                                             fetch.dst.eq(Mux(weights_to, desc.wbase, desc.wbase * R)),
                                             fetch.count.eq(Mux(weights_to, desc.in_ch, desc.in_ch * R)),
                                             fetch.ratio.eq(ratios[desc.fetch_to])]
                                m.d.sync += [fetch_to.eq(desc.fetch_to), pc.eq(pc + 1),
                                             pc_base.eq(pc_base + DESCRIPTOR_WORDS), word.eq(0)]
                                m.next = "FETCH"
                        with m.Default():
                            m.d.sync += [self.busy.eq(0), self.error.eq(1)]
                            m.next = "IDLE"
            with m.State("KV_CLEAR"):
                # steps x (in_ch * span) words, counted as two loops (no multiplier before the comparison)
                m.d.comb += kv_clr.eq(1)
                m.d.sync += [kv_count.eq(kv_count + 1), kv_in.eq(kv_in + 1)]
                with m.If(kv_in + 1 >= kv_cs):
                    m.d.sync += [kv_in.eq(0), kv_t.eq(kv_t + 1)]
                    with m.If(kv_t + 1 >= desc.steps):
                        m.next = "FIRST"
            with m.State("FIRST"):
                m.next = "LEAD"                    # the frame's first src0 (k) and mask words are read
            with m.State("LEAD"):
                lead()
            with m.State("LATCH"):
                # the word's events (its words registered as they left the banks): masked (MATMUL's mask), and
                # to the head it is read for (lead)
                word_in = Mux(word_grid, Cat(*(lv.as_unsigned()[:lw] for lv in ev_lvls)), 0)
                # (with `dense`, every lane of a word inside the grid: a zero adds nothing)
                m.d.sync += [pending.eq(word_in),
                             live.eq(Cat(*(u & (~desc.mask | mb) & ((word_in[l * lw:(l + 1) * lw] != 0)
                                                                   | (desc.dense & word_grid))
                                           for l, (u, mb) in enumerate(zip(word_used, mask_bits)))))]
                m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(live.any()):
                    pick()
                with m.Elif(last_word):
                    words_done()
                with m.Else():
                    lead()
            with m.State("UPDATE"):
                m.d.comb += issue.eq(1)
                m.d.sync += [go.eq(go + 1), w_go.eq(w_go + desc.in_ch), kv_go.eq(kv_go + 1),
                             at_g_last.eq(go + 1 >= g_last_r)]
                with m.If(at_g_last):
                    with m.If(live.any()):
                        pick()
                    with m.Elif(last_word):
                        words_done()
                    with m.Else():
                        lead()
            with m.State("DRAIN_A"):
                m.next = "DRAIN_X"                 # the accumulate pipeline's last update reaches its A stage
            with m.State("DRAIN_X"):
                m.next = "DRAIN_B"
            with m.State("DRAIN_B"):
                m.next = "WORDS_DONE"
            with m.State("WORDS_DONE"):
                # the last update is written at the end of this cycle
                m.d.sync += go.eq(0)
                with m.If(phase_k):
                    # the k pass goes over every token of every step, then the q pass runs frame by frame
                    with m.If(~frame_end_n):
                        m.d.sync += [n.eq(n + 1), fresh.eq(1), *restart_heads, *frame_moves("n+1")]
                        m.next = "FIRST"
                    with m.Elif(~frame_end_t):
                        m.d.sync += [n.eq(0), t.eq(t + 1), fresh.eq(1), *restart_heads, *frame_moves("t+1,n=0")]
                        m.next = "FIRST"
                    with m.Else():
                        m.d.sync += [n.eq(0), t.eq(0), phase_k.eq(0), *frame_moves("reset")]
                        frame("reset")
                with m.Elif(desc.reduce & ~(frame_end_t & frame_end_n)):
                    m.next = "NEXT_FRAME"
                with m.Elif(post_claimed | (post_busy & later_step)):
                    # the post unit still reads the previous frame's; or the previous time step's posts are still
                    # in the pipeline: a membrane read now would miss their writes (descriptor_cycles counts it)
                    pass
                with m.Else():
                    # the frame's posts start; with split, the engine goes on to the next frame in the other half
                    # of the accumulators (cleared), else it waits for the post unit's reads
                    with m.If((desc.kind == Kind.MATMUL) | attn):
                        m.d.sync += p_delay.eq(POST_LAG)
                    with m.Else():
                        m.d.sync += p_active.eq(1)
                    m.d.sync += [p_go.eq(0), p_r.eq(0), p_dst.eq(fb["dst"]), p_src1.eq(fb["src1"]),
                                 p_bias.eq(Mux(desc.bias_per_token, bias_nb, desc.bias_base)), p_first.eq(t == 0),
                                 post_off.eq(eng_off)]
                    with m.If(split):
                        low = (1 << H) - 1
                        m.d.sync += eng_off.eq(Mux(eng_off == 0, H, 0))
                        m.d.comb += touch_clr.eq(Mux(eng_off == 0, low << H, low))
                        m.next = "NEXT_FRAME"
                    with m.Else():
                        m.next = "POST_WAIT"
            with m.State("COPY"):
                m.d.comb += copy_issue.eq(1)
                m.d.sync += gi.eq(gi + 1)
                with m.If(windowed):
                    window_step()
                with m.If(gi + 1 >= n_gin):
                    m.d.sync += gi.eq(0)
                    m.next = "DRAIN_A"
            with m.State("CO_READ"):
                m.next = "CO_LATCH"                # both words leave the banks next cycle, registered
            with m.State("CO_LATCH"):
                m.next = "CO_MUL"
            with m.State("CO_MUL"):
                m.d.sync += co_add.eq(1)
                m.next = "CO_ADD"                  # the products registered
            with m.State("CO_ADD"):
                with m.If(co_more_g):
                    m.d.sync += [gi.eq(gi + 1), go.eq(go + 1)]
                    m.next = "CO_READ"
                with m.Elif(co_more_n):
                    m.d.sync += [gi.eq(0), go.eq(0), n.eq(n + 1), *frame_moves("n+1")]
                    m.next = "CO_READ"
                with m.Else():
                    m.d.sync += [gi.eq(0), go.eq(0), n.eq(0), *frame_moves("n=0")]
                    m.next = "DRAIN_A"
            with m.State("POST_WAIT"):
                # the post unit reads a step of a group a cycle (computed and written POST_STAGES cycles later);
                # past its last read (at P1 in the next cycle), the accumulators are cleared
                with m.If(p_active & last_step[0] & (p_go + 1 >= n_gout)):
                    m.d.sync += touch_wipe.eq(1)
                    m.next = "NEXT_FRAME"
            with m.State("NEXT_FRAME"):
                with m.If(~frame_end_t):
                    m.d.sync += [t.eq(t + 1), *frame_moves("t+1")]
                    frame("t+1")
                with m.Elif(~frame_end_n):
                    m.d.sync += [t.eq(0), n.eq(n + 1), *frame_moves("n+1,t=0")]
                    frame("n+1")
                with m.Else():
                    m.d.sync += [pc.eq(pc + 1), pc_base.eq(pc_base + DESCRIPTOR_WORDS), word.eq(0)]
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                # the last posts leave the pipeline before the next descriptor overwrites this one
                with m.If(~post_busy & ~post_claimed):
                    m.d.sync += eng_off.eq(0)
                    m.d.comb += touch_clr.eq((1 << len(touched)) - 1)
                    m.next = "FETCH"
        return m
