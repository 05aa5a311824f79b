# amaranth: UnusedElaboratable=no
"""The generated accelerator: a hardware plan (``compiler.hw.plan.Plan``) made into one Amaranth component.

One engine per plan stage, built from the ``hdl/`` cores, reading and writing on-chip buffers (one memory
per stored tensor); a controller runs the stages in order for each time step; the host bus
(``hdl.hostbus``, address map ``hdl.regmap``) loads pixels, starts an inference and reads logits and
counters. ``docs/architecture.md`` has the diagram. The plan is read by attribute: ``hdl`` does not
import the compiler.

Engines (the plan's stage kinds)::

    stem              pixels -> PatchConvUnit -> RequantUnit -> residual
    residual_neuron   residual -> NeuronUnit -> spikes
    dense_neuron      spikes -> EventQueue -> SpikeAccumulator -> NeuronUnit -> spikes
    dense_residual    spikes (& mask) -> EventQueue -> SpikeAccumulator -> RequantUnit -+-> ResidualAdd -> residual
                      residual ---------------------------------------------------------+
    linear_attention  V, K, Q spikes -> 3 EventQueues -> LinearAttentionUnit -> NeuronUnit -> spikes
    cospike           V, K spikes -> 2 EventQueues -> CoSpikeUnit -> NeuronUnit -> mask
    head              spikes -> EventQueue -> SpikeAccumulator (over all tokens and steps) -> RequantUnit -> logits

With ``plan.dense`` every EventQueue is replaced by :class:`hdl.buffers.DenseEvents` (every synapse is
scheduled, zeros included): the baseline that shows what the event-driven schedule saves.

Costs: :meth:`Accelerator.cores` lists the cores with the names of their costs (``core.cost(name)``,
:mod:`hdl.cost`) and :meth:`Accelerator.cost` states the top's own: the cores it builds only for their
costs are never elaborated (hence the ``UnusedElaboratable`` option above).
"""

from __future__ import annotations

import functools

import numpy as np
from amaranth.hdl import (Array, Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Module, Mux, ResetSignal, Signal,
                          Value, signed, unsigned)
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import regmap
from .accumulate import SpikeAccumulator
from .cost import CoreCost
from .cost import Memory as MemoryCost
from .attention import CoSpikeUnit, LinearAttentionUnit
from .buffers import BufferReader, DenseEvents
from .ecp5 import check_ecp5, own_register, use_ecp5
from .event_queue import EventQueue
from .hostbus import DATA_WIDTH, READ_LATENCY, HostBusSignature
from .lanes import StreamSlice
from .neuron import NeuronUnit
from .packing import signed_width
from .pixel_conv import PatchConvUnit
from .requant import RequantUnit, ResidualAdd

__all__ = ["Accelerator"]


def _ident(name: str) -> str:
    return name.replace(".", "_")


def _read_role(buf_name: str, prefix: str = "") -> str:
    """The role of a stage's reader of buffer ``buf_name`` (``prefix`` tells a second reader of the kind)."""
    return f"{prefix}read_{_ident(buf_name)}"


class _Engine:
    """The signals the controller sees of one engine."""

    def __init__(self, name: str):
        self.name = name
        self.start = Signal(name=f"{name}_start")
        self.busy = Signal(name=f"{name}_busy")
        self.events = Signal(4, name=f"{name}_events")       # non-zero events consumed this cycle
        self.synops = Signal(32, name=f"{name}_synops")      # synaptic operations scheduled this cycle
        self.enabled = Const(1, 1)                            # its clock runs (see clock_gating)


class _StageCores:
    """The cores of one stage by role (``<stage>_<role>`` in its engine), in the order the engine adds them,
    and the buffer and mask (or None) that each reader reads."""

    def __init__(self):
        self.cores: dict[str, wiring.Component] = {}
        self.reads: dict[str, tuple] = {}

    def __getitem__(self, role: str) -> wiring.Component:
        return self.cores[role]

    def add(self, role: str, core):
        self.cores[role] = core
        return core

    def read(self, role: str, buf, mask, reader: BufferReader) -> BufferReader:
        self.reads[role] = (buf, mask)
        return self.add(role, reader)


class Accelerator(wiring.Component):
    """The whole model in hardware, driven through the host bus.

    Parameters
    ----------
    plan : compiler.hw.plan.Plan
        Lanes, buffers and stages; the IR ops it names carry the weights.
    trace : bool
        A debug build: every buffer is readable on the bus (region 3 + its index) and the controller
        pauses after each time step but the last until the host writes ``CTRL_CONTINUE``.
    ecp5 : bool or "model", optional
        As for every core (:mod:`hdl.ecp5`).
    clock_gating : bool
        Give each engine its own clock, ``clk`` gated by an enable latched on the falling edge (an ICG),
        running only from its start until its last write (and, for every engine, from reset until the
        first inference is done: the cores clear their memories after a reset, which the ungated design
        does while it waits, so cycle counts match from the first inference on). Only one engine works at
        a time, so a cycle-based simulator evaluates a fraction of the design per cycle (Verilator ran the
        bundled model 4-6x faster); the logic and every cycle count are the same. Board builds leave it off (a LUT-gated
        clock does not belong in an FPGA; ECP5's DCCA would be the way to do it there).

    Members
    -------
    bus : In(HostBusSignature(regmap.ADDR_WIDTH))
    status : Out(3)
        busy, done, paused (for LEDs).
    """

    #: Cycles of the controller per stage run: its GO and WAIT states.
    CONTROLLER_CYCLES = 2

    def __init__(self, plan, *, trace: bool = False, ecp5=None, clock_gating: bool = False):
        self._plan = plan
        self._trace = bool(trace)
        self._gating = bool(clock_gating)
        self._ecp5 = check_ecp5(ecp5)
        super().__init__({"bus": In(HostBusSignature(regmap.ADDR_WIDTH)), "status": Out(3)})

    @property
    def plan(self):
        return self._plan

    # -- the cores of each stage ------------------------------------------------------------------

    def cores(self) -> list[tuple[str, wiring.Component]]:
        """Every core the engines instantiate, stage by stage, each named ``<stage>/<role>`` (in the engine
        of its stage it is the submodule ``<stage>_<role>``); the register slices between cores are
        wiring, not listed."""
        return [(f"{name}/{role}", core) for name, cores in self._costed_stages.items()
                for role, core in cores.cores.items() if not isinstance(core, StreamSlice)]

    @functools.cached_property
    def _costed_stages(self) -> dict[str, _StageCores]:
        """The stages' cores that :meth:`cores`, :meth:`cost` and :meth:`stage_cycles` describe, by stage name
        (``elaborate`` builds its own)."""
        return {stage.name: self._stage_cores(stage) for stage in self._plan.stages}

    def cost(self, name: str = "top") -> CoreCost:
        """The controller and host bus: the stages and logits it handles, and one memory per buffer with a
        read port per reader of it (and one for the trace region) (:mod:`hdl.cost`)."""
        plan = self._plan
        ports = dict.fromkeys(plan.buffers, int(self._trace))
        for cores in self._costed_stages.values():
            for buf, mask in cores.reads.values():
                for read in (buf, mask) if mask is not None else (buf,):
                    ports[read.name] += 1
        memories = [MemoryCost(f"buffer {buf.name}", buf.word_width, buf.depth, read_ports=max(1, ports[buf.name]))
                    for buf in plan.buffers.values()]
        return CoreCost("top", name, {"stages": len(plan.stages), "logit_bits": plan.classes * 64}, memories)

    def stage_cycles(self, stage, events: dict, *, last_step: bool) -> float:
        """Cycles of one run of ``stage``'s engine, from its cores' cycle formulas, and the controller's
        :data:`CONTROLLER_CYCLES` (the pipeline fills that the formulas leave out are not counted).

        Parameters
        ----------
        stage : compiler.hw.plan.Stage
        events : dict of str to array
            Per spike source of the stage, its non-zero inputs per token in this time step (means allowed);
            a masked source's only those that its mask lets through.
        last_step : bool
            The run of the last time step (the head's accumulators are read out after it).
        """
        cores = self._costed_stages[stage.name]
        if stage.kind == "stem":
            work = cores["conv"].frame_cycles()
        elif stage.kind == "residual_neuron":
            work = cores[_read_role(stage.srcs[0])].words
        elif stage.kind in ("dense_neuron", "dense_residual"):
            work = float(np.sum(cores["acc"].frame_cycles(np.asarray(events[stage.srcs[0]]))))
        elif stage.kind == "head":
            acc = cores["acc"]
            work = acc.issue_cycles(float(np.sum(events[stage.srcs[0]]))) + (acc.readout_cycles if last_step else 0)
        elif stage.kind in ("linear_attention", "cospike"):
            # a frame without spikes still has its closing event
            frames = [max(1.0, float(np.sum(events[name]))) for name in stage.srcs]
            work = cores["attn" if stage.kind == "linear_attention" else "cospike"].step_cycles(*frames)
        else:
            raise ValueError(f"unknown stage kind {stage.kind!r}")
        return self.CONTROLLER_CYCLES + work

    def _reader(self, cores, buf, frame, *, prefix="", base_width=0, mask=None):
        tokens = self._plan.tokens if buf.kind == "pixels" else buf.tokens
        return cores.read(_read_role(buf.name, prefix), buf, mask, BufferReader(
            tokens=tokens, groups=buf.groups, group_bits=buf.group_bits, word_width=buf.word_width, frame=frame,
            base_width=base_width, mask_width=mask.word_width if mask is not None else 0, value_width=buf.width))

    def _events(self, cores, buf, addr_width, frame):
        """The event stream of ``buf``'s words (EventQueue, or DenseEvents for the baseline)."""
        K = buf.lanes
        width = max(addr_width, (K - 1).bit_length(), 1)
        if self._plan.dense:
            last_lanes = buf.channels - (buf.groups - 1) * K
            q = DenseEvents(lanes=K, level_width=buf.width, addr_width=width, groups=buf.groups,
                            last_lanes=last_lanes if frame == "token" else K)
        else:
            q = EventQueue(K, buf.width, width)
        return cores.add(f"events_{_ident(buf.name)}", q)

    def _accumulator(self, cores, dense_op, src):
        plan = self._plan
        return cores.add("acc", SpikeAccumulator(plan.lanes, dense_op.weight, dense_op.bits, src.width,
                                                 self._width(dense_op.dst)[0], dense=plan.dense, ecp5=self._ecp5))

    def _neuron_unit(self, cores, op, lanes, in_width, tokens, in_range):
        return cores.add("neuron", NeuronUnit.from_op(op, lanes=lanes, in_width=in_width, tokens=tokens,
                                                      timesteps=self._plan.timesteps, in_range=in_range,
                                                      ecp5=self._ecp5))

    def _stage_cores(self, stage) -> _StageCores:
        """The cores of ``stage``, by role, in the order its engine adds them."""
        plan, P, N, ecp5 = self._plan, self._plan.lanes, self._plan.tokens, self._ecp5
        cores = _StageCores()
        ops = [plan.op(name) for name in stage.ops]
        src = plan.buffers[stage.srcs[0]]
        if stage.kind == "stem":
            conv, rq = ops
            base_width = (plan.pixel_frames * N - 1).bit_length() if plan.pixel_frames > 1 else 0
            self._reader(cores, src, "token", base_width=base_width)
            unit = cores.add("conv", PatchConvUnit.from_op(conv, lanes=P, tokens=N, pixel_bits=src.width,
                                                           ecp5=ecp5))
            cores.add("rq", RequantUnit.from_op(rq, lanes=P, in_width=unit.acc_width, tokens=N,
                                                in_range=self._width(conv.dst)[1], ecp5=ecp5))
        elif stage.kind == "residual_neuron":
            self._reader(cores, src, "token")
            self._neuron_unit(cores, ops[0], P, src.width, N, self._width(src.name)[1])
        elif stage.kind in ("dense_neuron", "dense_residual", "head"):
            dense_op = ops[1] if stage.kind == "head" else ops[0]
            mask = plan.buffers[stage.mask] if stage.mask else None
            self._reader(cores, src, "token", mask=mask)
            self._events(cores, src, max(1, (dense_op.weight.shape[1] - 1).bit_length()), "token")
            acc = self._accumulator(cores, dense_op, src)
            rng = self._width(dense_op.dst)[1]
            if stage.kind == "dense_neuron":
                self._neuron_unit(cores, ops[1], P, acc.acc_width, N, rng)
            elif stage.kind == "dense_residual":
                rq, add = ops[1], ops[2]
                cores.add("rq", RequantUnit.from_op(rq, lanes=P, in_width=acc.acc_width, tokens=N, in_range=rng,
                                                    ecp5=ecp5))
                res = plan.buffers[stage.srcs[-1]]
                in_width = max(res.width, self._width(rq.dst)[0])
                cores.add("add", ResidualAdd.from_op(add, lanes=P, channels=res.channels, tokens=N,
                                                     in_width=in_width))
                self._reader(cores, res, "token", prefix="res_")
            else:
                cores.add("rq", RequantUnit.from_op(ops[2], lanes=P, in_width=acc.acc_width, tokens=1, in_range=rng,
                                                    out_width=plan.logit_width, ecp5=ecp5))
        elif stage.kind in ("linear_attention", "cospike"):
            op, sn = ops
            events = []
            for name in stage.srcs:
                buf = plan.buffers[name]
                self._reader(cores, buf, "all")
                events.append(self._events(cores, buf, (buf.tokens * buf.channels - 1).bit_length(), "all"))
            addr_width = len(events[0].events.payload.addr)
            rng = self._width(op.dst)[1]
            if stage.kind == "linear_attention":
                unit = cores.add("attn", LinearAttentionUnit(N, src.channels, op.heads, plan.types[op.q].hi,
                                                             level_width=src.width, addr_width=addr_width,
                                                             ecp5=ecp5))
                d = src.channels // op.heads
                neuron = self._neuron_unit(cores, sn, d, unit.acc_width + 1, N, rng)
                # a register slice between the attention unit's output sweep and the neuron: the neuron's
                # credit into the sweep's read-stage enables, across the die, was the critical path at 100 MHz
                cores.add("slice", StreamSlice(neuron.i.payload.shape()))
            else:
                unit = cores.add("cospike", CoSpikeUnit(N, src.channels, plan.types[op.k].hi, lanes=P,
                                                        level_width=src.width, addr_width=addr_width, ecp5=ecp5))
                self._neuron_unit(cores, sn, P, unit.count_width + 1, 1, rng)
        else:
            raise ValueError(f"unknown stage kind {stage.kind!r}")
        return cores

    # -- helpers --------------------------------------------------------------------------------

    def _add(self, m, stage, cores, role):
        """Add the core ``role`` of ``stage`` to the engine."""
        m.submodules[f"{stage.name}_{role}"] = core = cores[role]
        return core

    def _add_reader(self, m, stage, cores, buf, *, prefix="", base=None):
        """Add the reader of ``buf`` to the engine, with its read ports on the buffer (and mask)."""
        role = _read_role(buf.name, prefix)
        r = self._add(m, stage, cores, role)
        _, mask = cores.reads[role]
        port = self._mems[buf.name].read_port(domain=self._domain)
        m.d.comb += [port.addr.eq(r.addr), r.data.eq(port.data)]
        if base is not None:
            m.d.comb += r.base.eq(base)
        if mask is not None:
            mport = self._mems[mask.name].read_port(domain=self._domain)
            m.d.comb += [mport.addr.eq(r.mask_addr), r.mask_data.eq(mport.data)]
        return r

    def _add_events(self, m, stage, cores, reader, buf):
        """Add the event source of ``buf`` to the engine, fed by ``reader``."""
        q = self._add(m, stage, cores, f"events_{_ident(buf.name)}")
        m.d.comb += [
            q.spikes.valid.eq(reader.o.valid),
            reader.o.ready.eq(q.spikes.ready),
            q.spikes.payload.levels.eq(reader.o.payload.data),
            q.spikes.payload.last.eq(reader.o.payload.last),
        ]
        return q.events

    def _count(self, m, eng, *fires):
        """Count events ``(valid, ready, level, fan_out)`` into the engine's counters."""
        ev, ops = [], []
        for valid, ready, level, fan_out in fires:
            fire = valid & ready
            nonzero = fire & (level != 0)
            ev.append(nonzero)
            ops.append(Mux(fire if self._plan.dense else nonzero, fan_out, 0))
        m.d.comb += [eng.events.eq(sum(ev)), eng.synops.eq(sum(ops))]

    def _write(self, m, buf, valid, token, group, values):
        """Write a lane group into buffer ``buf`` (values: the lanes, each cut to the buffer's width)."""
        port = self._mems[buf.name].write_port(domain=self._domain)
        gb = buf.group_bits
        addr = Cat(group[:gb], token) if gb else token
        m.d.comb += [port.en.eq(valid), port.addr.eq(addr),
                     port.data.eq(Cat(*(Value.cast(v)[:buf.width] for v in values)))]

    @staticmethod
    def _finish(m, eng, when):
        with m.If(eng.start):
            m.d.sync += eng.busy.eq(1)
        with m.Elif(when):
            m.d.sync += eng.busy.eq(0)

    def _add_accumulator(self, m, stage, cores, events, frame_end=None):
        """Add the SpikeAccumulator fed by ``events``; ``frame_end`` (default: every frame's ``last``) says
        which ``last`` closes an accumulation frame."""
        acc = self._add(m, stage, cores, "acc")
        m.d.comb += [
            acc.events.valid.eq(events.valid),
            events.ready.eq(acc.events.ready),
            acc.events.payload.addr.eq(events.payload.addr[:acc.addr_width]),
            acc.events.payload.level.eq(events.payload.level),
            acc.events.payload.last.eq(events.payload.last if frame_end is None else events.payload.last & frame_end),
        ]
        return acc

    def _token_counter(self, m, name, stream_):
        """The token of each beat of a stream whose frames are one token each (``last`` on the final beat)."""
        token = Signal(range(max(self._plan.tokens, 2)), name=f"{name}_token")
        with m.If(stream_.valid & stream_.ready & stream_.payload.last):
            m.d.sync += token.eq(Mux(token == self._plan.tokens - 1, 0, token + 1))
        return token

    def _width(self, tensor):
        t = self._plan.types[tensor]
        return signed_width(t.lo, t.hi), (t.lo, t.hi)

    # -- engines --------------------------------------------------------------------------------

    def _stem(self, m, stage, cores, eng, ctx):
        plan = self._plan
        conv = plan.op(stage.ops[0])
        pix = plan.buffers[stage.srcs[0]]
        dst = plan.buffers[stage.dst]
        r = self._add_reader(m, stage, cores, pix,
                             base=ctx["t"] * plan.tokens if plan.pixel_frames > 1 else None)
        unit = self._add(m, stage, cores, "conv")
        m.d.comb += [r.start.eq(eng.start), unit.i.valid.eq(r.o.valid), r.o.ready.eq(unit.i.ready),
                     unit.i.payload.pixel.eq(r.o.payload.data), unit.i.payload.last.eq(r.o.payload.last)]
        req = self._add(m, stage, cores, "rq")
        wiring.connect(m, unit.o, req.i)
        o = req.o
        m.d.comb += o.ready.eq(1)
        self._write(m, dst, o.valid, o.payload.token, o.payload.group, o.payload.values)
        fan = conv.weight[0].size * conv.weight.shape[0] // plan.lanes
        m.d.comb += eng.synops.eq(Mux(unit.i.valid & unit.i.ready, fan, 0))
        self._finish(m, eng, o.valid & o.payload.last)

    def _residual_neuron(self, m, stage, cores, eng, ctx):
        plan = self._plan
        src, dst = plan.buffers[stage.srcs[0]], plan.buffers[stage.dst]
        r = self._add_reader(m, stage, cores, src)
        unit = self._add(m, stage, cores, "neuron")
        i = unit.i
        m.d.comb += [r.start.eq(eng.start), i.valid.eq(r.o.valid), r.o.ready.eq(i.ready),
                     i.payload.group.eq(r.o.payload.group), i.payload.token.eq(r.o.payload.token),
                     i.payload.first.eq(ctx["first"]), i.payload.last.eq(r.o.payload.last),
                     i.payload.values.eq(r.o.payload.data)]
        o = unit.o
        m.d.comb += o.ready.eq(1)
        self._write(m, dst, o.valid, o.payload.token, o.payload.group, o.payload.levels)
        self._finish(m, eng, o.valid & o.payload.last & (o.payload.token == plan.tokens - 1))

    def _dense_front(self, m, stage, cores, eng):
        """Reader (with the sdsa1 mask), events and accumulator of a Dense stage."""
        plan = self._plan
        dense_op = plan.op(stage.ops[0])
        src = plan.buffers[stage.srcs[0]]
        r = self._add_reader(m, stage, cores, src)
        m.d.comb += r.start.eq(eng.start)
        events = self._add_events(m, stage, cores, r, src)
        acc = self._add_accumulator(m, stage, cores, events)
        self._count(m, eng, (events.valid, events.ready, events.payload.level, dense_op.weight.shape[0]))
        token = self._token_counter(m, stage.name, acc.acc)
        return acc, token

    def _dense_neuron(self, m, stage, cores, eng, ctx):
        plan = self._plan
        acc, token = self._dense_front(m, stage, cores, eng)
        unit = self._add(m, stage, cores, "neuron")
        i, a = unit.i, acc.acc
        m.d.comb += [i.valid.eq(a.valid), a.ready.eq(i.ready), i.payload.group.eq(a.payload.group),
                     i.payload.token.eq(token), i.payload.first.eq(ctx["first"]),
                     i.payload.last.eq(a.payload.last), i.payload.values.eq(a.payload.values)]
        o = unit.o
        dst = plan.buffers[stage.dst]
        m.d.comb += o.ready.eq(1)
        self._write(m, dst, o.valid, o.payload.token, o.payload.group, o.payload.levels)
        self._finish(m, eng, o.valid & o.payload.last & (o.payload.token == plan.tokens - 1))

    def _dense_residual(self, m, stage, cores, eng, ctx):
        plan = self._plan
        acc, token = self._dense_front(m, stage, cores, eng)
        rq, add = plan.op(stage.ops[1]), plan.op(stage.ops[2])
        req = self._add(m, stage, cores, "rq")
        a = acc.acc
        m.d.comb += [req.i.valid.eq(a.valid), a.ready.eq(req.i.ready), req.i.payload.group.eq(a.payload.group),
                     req.i.payload.token.eq(token), req.i.payload.last.eq(a.payload.last),
                     req.i.payload.values.eq(a.payload.values)]
        res = plan.buffers[stage.srcs[-1]]
        radd = self._add(m, stage, cores, "add")
        rr = self._add_reader(m, stage, cores, res, prefix="res_")
        m.d.comb += rr.start.eq(eng.start)
        res_values = data.ArrayLayout(signed(res.width), plan.lanes)(rr.o.payload.data)
        # the residual is the Add's first operand (a), the branch the second: the IR's order
        branch_is_a = add.a == rq.dst
        res_port, br_port = (radd.b, radd.a) if branch_is_a else (radd.a, radd.b)
        m.d.comb += [res_port.valid.eq(rr.o.valid), rr.o.ready.eq(res_port.ready),
                     res_port.payload.group.eq(rr.o.payload.group), res_port.payload.token.eq(rr.o.payload.token),
                     res_port.payload.last.eq(rr.o.payload.last)]
        m.d.comb += [res_port.payload.values[l].eq(res_values[l]) for l in range(plan.lanes)]
        m.d.comb += [br_port.valid.eq(req.o.valid), req.o.ready.eq(br_port.ready),
                     br_port.payload.group.eq(req.o.payload.group), br_port.payload.token.eq(req.o.payload.token),
                     br_port.payload.last.eq(req.o.payload.last)]
        m.d.comb += [br_port.payload.values[l].eq(req.o.payload.values[l]) for l in range(plan.lanes)]
        o = radd.o
        m.d.comb += o.ready.eq(1)
        self._write(m, plan.buffers[stage.dst], o.valid, o.payload.token, o.payload.group, o.payload.values)
        self._finish(m, eng, o.valid & o.payload.last & (o.payload.token == plan.tokens - 1))

    def _spike_inputs(self, m, stage, cores, eng):
        """Readers and event streams (one whole-step frame each) for the attention cores' inputs."""
        plan = self._plan
        streams = []
        for name in stage.srcs:
            buf = plan.buffers[name]
            r = self._add_reader(m, stage, cores, buf)
            m.d.comb += r.start.eq(eng.start)
            streams.append(self._add_events(m, stage, cores, r, buf))
        return streams

    @staticmethod
    def _connect_events(m, src, dst):
        m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                     dst.payload.addr.eq(src.payload.addr), dst.payload.level.eq(src.payload.level),
                     dst.payload.last.eq(src.payload.last)]

    def _linear_attention(self, m, stage, cores, eng, ctx):
        plan = self._plan
        op = plan.op(stage.ops[0])
        v, k, q = self._spike_inputs(m, stage, cores, eng)
        unit = self._add(m, stage, cores, "attn")
        for src, port in ((v, unit.v), (k, unit.k), (q, unit.q)):
            self._connect_events(m, src, port)
        d = plan.buffers[stage.srcs[0]].channels // op.heads
        self._count(m, eng, (k.valid, k.ready, k.payload.level, d), (q.valid, q.ready, q.payload.level, d),
                    (v.valid, v.ready, v.payload.level, 0))
        neuron = self._add(m, stage, cores, "neuron")
        piped = self._add(m, stage, cores, "slice")
        wiring.connect(m, piped.o, neuron.i)
        i, o = piped.i, unit.o
        m.d.comb += [i.valid.eq(o.valid), o.ready.eq(i.ready), i.payload.group.eq(o.payload.head),
                     i.payload.token.eq(o.payload.token), i.payload.first.eq(ctx["first"]),
                     i.payload.last.eq(o.payload.last)]
        m.d.comb += [i.payload.values[l].eq(o.payload.values[l]) for l in range(d)]
        n = neuron.o
        m.d.comb += n.ready.eq(1)
        self._write(m, plan.buffers[stage.dst], n.valid, n.payload.token, n.payload.group, n.payload.levels)
        self._finish(m, eng, n.valid & n.payload.last)

    def _cospike(self, m, stage, cores, eng, ctx):
        plan = self._plan
        v, k = self._spike_inputs(m, stage, cores, eng)
        unit = self._add(m, stage, cores, "cospike")
        self._connect_events(m, v, unit.v)
        self._connect_events(m, k, unit.k)
        self._count(m, eng, (k.valid, k.ready, k.payload.level, 1), (v.valid, v.ready, v.payload.level, 0))
        neuron = self._add(m, stage, cores, "neuron")
        i, o = neuron.i, unit.o
        m.d.comb += [i.valid.eq(o.valid), o.ready.eq(i.ready), i.payload.group.eq(o.payload.group),
                     i.payload.token.eq(0), i.payload.first.eq(ctx["first"]), i.payload.last.eq(o.payload.last)]
        m.d.comb += [i.payload.values[l].eq(o.payload.values[l]) for l in range(plan.lanes)]
        n = neuron.o
        m.d.comb += n.ready.eq(1)
        self._write(m, plan.buffers[stage.dst], n.valid, Const(0, 1), n.payload.group, n.payload.levels)
        self._finish(m, eng, n.valid & n.payload.last)

    def _head(self, m, stage, cores, eng, ctx):
        plan = self._plan
        dense_op = plan.op(stage.ops[1])
        src = plan.buffers[stage.srcs[0]]
        r = self._add_reader(m, stage, cores, src)
        m.d.comb += r.start.eq(eng.start)
        events = self._add_events(m, stage, cores, r, src)
        # one accumulation frame over every token and time step: only the final frame's last is kept
        frames = Signal(range(max(plan.tokens, 2)), name="head_frames")
        end_of_frame = events.valid & events.ready & events.payload.last
        final = ctx["last_step"] & (frames == plan.tokens - 1)
        acc = self._add_accumulator(m, stage, cores, events, frame_end=final)
        self._count(m, eng, (events.valid, events.ready, events.payload.level, dense_op.weight.shape[0]))
        with m.If(end_of_frame):
            m.d.sync += frames.eq(Mux(frames == plan.tokens - 1, 0, frames + 1))
        req = self._add(m, stage, cores, "rq")
        a = acc.acc
        m.d.comb += [req.i.valid.eq(a.valid), a.ready.eq(req.i.ready), req.i.payload.group.eq(a.payload.group),
                     req.i.payload.token.eq(0), req.i.payload.last.eq(a.payload.last),
                     req.i.payload.values.eq(a.payload.values)]
        o = req.o
        m.d.comb += o.ready.eq(1)
        with m.If(o.valid):
            with m.Switch(o.payload.group):
                for g in range(-(-plan.classes // plan.lanes)):
                    with m.Case(g):
                        for lane in range(plan.lanes):
                            k = g * plan.lanes + lane
                            if k < plan.classes:
                                m.d.sync += self._logits[k].eq(o.payload.values[lane])
        self._finish(m, eng, Mux(ctx["last_step"], o.valid & o.payload.last,
                                 end_of_frame & (frames == plan.tokens - 1)))

    # -- the top --------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        T = plan.timesteps
        self._mems = {}
        for buf in plan.buffers.values():
            mem = Memory(shape=unsigned(buf.word_width), depth=buf.depth, init=[])
            m.submodules[f"buf_{_ident(buf.name)}"] = mem
            self._mems[buf.name] = mem
        self._logits = [Signal(signed(plan.logit_width), name=f"logit{k}") for k in range(plan.classes)]

        t = Signal(range(max(T, 2)))
        ctx = {"t": t, "first": t == 0, "last_step": t == T - 1}
        engines = []
        builders = {"stem": self._stem, "residual_neuron": self._residual_neuron,
                    "dense_neuron": self._dense_neuron, "dense_residual": self._dense_residual,
                    "linear_attention": self._linear_attention, "cospike": self._cospike, "head": self._head}
        # Until the first inference is done every engine's clock runs: the cores clear their memories after a
        # reset, which the ungated design does while it waits (same cycle counts from the first inference on).
        warm = Signal(init=1)
        if self._gating:
            m.domains.negedge = ClockDomain("negedge", clk_edge="neg", reset_less=True)
            m.d.comb += ClockSignal("negedge").eq(ClockSignal("sync"))
        for index, stage in enumerate(plan.stages):
            eng = _Engine(_ident(stage.name))
            em = Module()
            # the engine's buffer ports are clocked with it (a memory port names its domain)
            domain = self._domain = f"engine{index}"
            builders[stage.kind](em, stage, self._stage_cores(stage), eng, ctx)
            m.domains += ClockDomain(domain)
            if self._gating:
                eng.enabled = Signal(name=f"{_ident(stage.name)}_clock_enable")
                m.d.negedge += eng.enabled.eq(eng.busy | eng.start | warm)
                m.d.comb += [ClockSignal(domain).eq(ClockSignal("sync") & eng.enabled),
                             ResetSignal(domain).eq(ResetSignal("sync", allow_reset_less=True))]
            else:
                # the engine's own copy of the reset, one cycle later: one register per engine, placed beside
                # it, instead of one net from the reset synchronizer to every flip-flop of the design (on the
                # board that net's long branches were the critical path); a primitive on the ECP5, or Yosys
                # merges the copies back into one
                reset = own_register(m, f"{_ident(stage.name)}_reset", ResetSignal("sync", allow_reset_less=True),
                                     init=1, ecp5=use_ecp5(self._ecp5, platform))
                m.d.comb += [ClockSignal(domain).eq(ClockSignal("sync")), ResetSignal(domain).eq(reset)]
            em = DomainRenamer(domain)(em)
            m.submodules[f"engine_{_ident(stage.name)}"] = em
            engines.append(eng)

        # -- bus --
        bus = self.bus
        region, offset = bus.addr[regmap.REGION_SHIFT:], bus.addr[:regmap.REGION_SHIFT]
        command = Signal(2)
        m.d.comb += command.eq(Mux(bus.we & (region == regmap.REGION_REGS) & (offset == regmap.REG_CTRL),
                                   bus.wdata[:2], 0))
        pix = plan.input_buffer
        pport = self._mems[pix.name].write_port()
        m.d.comb += [pport.addr.eq(offset), pport.data.eq(bus.wdata),
                     pport.en.eq(bus.we & (region == regmap.REGION_PIXELS))]

        # -- controller --
        busy, done, paused = Signal(), Signal(), Signal()
        cycles = Signal(64)
        events = Signal(32)
        synops = Signal(64)
        m.d.comb += self.status.eq(Cat(busy, done, paused))
        with m.If(busy & ~paused):
            m.d.sync += cycles.eq(cycles + 1)
        # Event and synop counts go through two registers (each engine's, then their sum) before the 64-bit
        # add: summing every engine's per-cycle count in one cycle was the design's critical path. Engines
        # fire only while busy, and their last fire is at least two cycles before the controller goes idle
        # (WAIT, then STEP), so the counts are whole when an inference is done; idle, the registers hold 0.
        engine_events = [Signal.like(e.events, name=f"{e.name}_events_q") for e in engines]
        engine_synops = [Signal.like(e.synops, name=f"{e.name}_synops_q") for e in engines]
        step_events, step_synops = Signal(len(engines[0].events) + 4), Signal(32)
        m.d.sync += [q.eq(Mux(e.enabled, e.events, 0)) for q, e in zip(engine_events, engines)]
        m.d.sync += [q.eq(Mux(e.enabled, e.synops, 0)) for q, e in zip(engine_synops, engines)]
        m.d.sync += [step_events.eq(sum(engine_events)), step_synops.eq(sum(engine_synops)),
                     events.eq(events + step_events), synops.eq(synops + step_synops)]
        n = len(engines)
        stage_index = Signal(range(max(n, 2)))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(command == regmap.CTRL_START):
                    m.d.sync += [t.eq(0), busy.eq(1), done.eq(0), cycles.eq(0), events.eq(0), synops.eq(0)]
                    m.next = "GO0"
            for i, (stage, eng) in enumerate(zip(plan.stages, engines)):
                nxt = f"GO{i + 1}" if i + 1 < n else "STEP"
                with m.State(f"GO{i}"):
                    m.d.sync += stage_index.eq(i)
                    if stage.once:
                        with m.If(t == 0):
                            m.d.comb += eng.start.eq(1)
                            m.next = f"WAIT{i}"
                        with m.Else():
                            m.next = nxt
                    else:
                        m.d.comb += eng.start.eq(1)
                        m.next = f"WAIT{i}"
                with m.State(f"WAIT{i}"):
                    with m.If(~eng.busy):
                        m.next = nxt
            with m.State("STEP"):
                with m.If(t == T - 1):
                    m.d.sync += [busy.eq(0), done.eq(1), warm.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    if self._trace:
                        m.d.sync += paused.eq(1)
                        m.next = "PAUSE"
                    else:
                        m.d.sync += t.eq(t + 1)
                        m.next = "GO0"
            if self._trace:
                with m.State("PAUSE"):
                    with m.If(command == regmap.CTRL_CONTINUE):
                        m.d.sync += [paused.eq(0), t.eq(t + 1)]
                        m.next = "GO0"

        # -- bus reads (READ_LATENCY 3): the address is registered here, next to the read multiplexer (the
        # bridge's address register is across the die); then the register and the logit word are selected
        # into two registers; then they (or, in trace builds, a buffer word's 32-bit chunk) go to ``rdata``.
        # The multiplexer spans the die, so it gets a cycle of its own --
        assert READ_LATENCY >= 3            # answered in 3 cycles and held until the next read: the contract
        rdata, reg_q, logit_q = Signal(DATA_WIDTH), Signal(DATA_WIDTH), Signal(DATA_WIDTH)
        raddr, re1, re2 = Signal.like(bus.addr, name="raddr"), Signal(), Signal()
        m.d.sync += [re1.eq(bus.re), re2.eq(re1)]
        with m.If(bus.re):
            m.d.sync += raddr.eq(bus.addr)
        rregion, roffset = raddr[regmap.REGION_SHIFT:], raddr[:regmap.REGION_SHIFT]
        regs = {
            regmap.REG_ID: Const(plan.model_id, 32),
            regmap.REG_STATUS: Cat(busy, done, paused),
            regmap.REG_CYCLES_LO: cycles[:32], regmap.REG_CYCLES_HI: cycles[32:],
            regmap.REG_EVENTS: events,
            regmap.REG_SYNOPS_LO: synops[:32], regmap.REG_SYNOPS_HI: synops[32:],
            regmap.REG_STEP: t,
            regmap.REG_STAGE: stage_index,
        }
        logit_words = []
        for v in self._logits:
            # a copy beside the read multiplexer, one cycle behind the head engine's register (the host reads
            # logits after `done`, several cycles after the head's last write): the multiplexer's inputs are
            # then all the controller's, and its address no longer crosses the die (the critical path)
            copy, wide = Signal.like(v, name=f"{v.name}_read"), Signal(signed(64))
            m.d.sync += copy.eq(v)
            m.d.comb += wide.eq(copy)
            logit_words += [wide[:32], wide[32:]]
        logit_array = Array(logit_words)
        # narrow decodes (the offset's high bits compared with 0, not the whole offset with a bound)
        reg_bits = max(a for a in regs).bit_length()
        logit_bits = max(1, (len(logit_words) - 1).bit_length())
        reg_hit = (rregion == regmap.REGION_REGS) & (roffset[reg_bits:] == 0)
        logit_index = roffset[:logit_bits]
        logit_hit = ((rregion == regmap.REGION_LOGITS) & (roffset[logit_bits:] == 0)
                     & (logit_index < len(logit_words) if len(logit_words) < 1 << logit_bits else 1))
        reg_word = Signal(DATA_WIDTH)
        with m.Switch(roffset[:reg_bits]):
            for a, v in regs.items():
                with m.Case(a):
                    m.d.comb += reg_word.eq(v)
        with m.If(re1):
            m.d.sync += [reg_q.eq(Mux(reg_hit, reg_word, 0)), logit_q.eq(Mux(logit_hit, logit_array[logit_index], 0))]
        m.d.comb += bus.rdata.eq(rdata)
        if not self._trace:
            with m.If(re2):
                m.d.sync += rdata.eq(reg_q | logit_q)
        else:
            sel = Signal(range(len(plan.buffers) + 1))
            chunk = Signal(8)
            trace_data = Signal(DATA_WIDTH)
            m.d.sync += sel.eq(0)
            cases = []
            for index, buf in enumerate(plan.buffers.values()):
                port = self._mems[buf.name].read_port()
                cb = max(0, (-(-buf.word_width // DATA_WIDTH) - 1).bit_length())
                if buf.depth << cb > 1 << regmap.TRACE_INDEX_SHIFT or index >> (regmap.REGION_SHIFT
                                                                               - regmap.TRACE_INDEX_SHIFT):
                    raise ValueError(f"trace build: buffer {buf.name} does not fit the trace region")
                m.d.comb += port.addr.eq(roffset[:regmap.TRACE_INDEX_SHIFT] >> cb)
                hit = (rregion == regmap.REGION_TRACE) & (roffset[regmap.TRACE_INDEX_SHIFT:] == index)
                with m.If(re1 & hit):
                    m.d.sync += [sel.eq(index + 1), chunk.eq(roffset[:cb] if cb else 0)]
                padded = Cat(port.data, Const(0, DATA_WIDTH))
                cases.append((index + 1, Array(padded[j * DATA_WIDTH:(j + 1) * DATA_WIDTH]
                                               for j in range(1 << cb))[chunk[:cb]] if cb else padded[:DATA_WIDTH]))
            with m.Switch(sel):
                for value, word in cases:
                    with m.Case(value):
                        m.d.comb += trace_data.eq(word)
            with m.If(re2):
                m.d.sync += rdata.eq(Mux(sel != 0, trace_data, reg_q | logit_q))
        return m
