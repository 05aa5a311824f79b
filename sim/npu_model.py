"""The overlay's program interpreter: executes a compiled program (``compiler.hw.program``) on the overlay's
memory images, descriptor by descriptor, with the arithmetic of ``docs/semantics.md``.

It reads and writes the scratchpad banks, the weight store and the parameter memories at the addresses the
descriptors give, with the banks' element widths (a value is stored in ``spike_bits`` / ``wide_bits`` bits
and read back from them), so it checks the compiler's allocation and images as well as its fusion: bit-exact
against the golden model means the program is right. The gateware (``hdl.npu``) is verified against it
descriptor by descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hdl.npu.isa import (EXT_ALIGN, FETCH_TARGETS, Bank, Config, Descriptor, Kind, Operand, Post, fetch_ratio,
                         fetch_rows, param_reads, row_layout, unpack_rows)
from hdl.npu.overlay import dense_lanes
from hdl.packing import groups as n_groups

__all__ = ["Machine", "run"]


def _sat(x: np.ndarray, width: int) -> np.ndarray:
    return np.clip(x, -(1 << (width - 1)), (1 << (width - 1)) - 1)


@dataclass
class Machine:
    """The overlay's memories for one inference: two scratchpad banks (``[depth, lanes]`` raw element bits),
    the images of the program, and the logit registers."""
    config: Config
    weights: np.ndarray
    mult: np.ndarray
    bias: np.ndarray
    theta: np.ndarray
    banks: dict[Bank, np.ndarray] = field(default_factory=dict)
    logits: np.ndarray | None = None
    # non-zero events consumed, per descriptor and frame (``hdl.npu.overlay.frame_count``'s order)
    events: dict[str, np.ndarray] = field(default_factory=dict)
    ext: np.ndarray | None = None      # the external memory's 16-bit words (FETCH's source)
    fetching: tuple | None = None      # (memory, lo, hi) of a FETCH that may still run beside the next descriptor

    def __post_init__(self):
        c = self.config
        if self.ext is not None:       # FETCH writes the weight store and the parameter memories: full-size ones
            for name, depth, shape in (("weights", c.weight_depth, ()), ("mult", c.param_depth, ()),
                                       ("bias", c.param_depth, ()), ("theta", c.param_depth, (c.levels,))):
                store = np.zeros((depth, c.lanes, *shape), np.int64)
                image = getattr(self, name)
                store[:len(image)] = image
                setattr(self, name, store)
        self.banks = {Bank.SPIKES: np.zeros((c.spike_depth, c.lanes), np.int64),
                      Bank.WIDE: np.zeros((c.wide_depth, c.lanes), np.int64)}
        self.logits = np.zeros(c.classes, np.int64)

    def _bits(self, bank: Bank) -> int:
        return self.config.spike_bits if bank == Bank.SPIKES else self.config.wide_bits

    def read(self, op: Operand, t: int, tokens: int, channels: int) -> np.ndarray:
        """Elements ``[tokens, channels]`` of frame ``t``."""
        P, G = self.config.lanes, n_groups(channels, self.config.lanes)
        rows = [self.banks[op.bank][op.word(t, n, 0):op.word(t, n, 0) + G].reshape(-1)[:channels]
                for n in range(tokens)]
        raw = np.stack(rows)
        if op.bank == Bank.WIDE:
            w = self._bits(op.bank)
            raw = np.where(raw >> (w - 1) & 1, raw - (1 << w), raw)
        return raw

    def read_window(self, d: Descriptor, t: int) -> np.ndarray:
        """src0's window of every output token of frame ``t`` (``Descriptor.window``): ``[tokens, in_ch]``, tap
        by tap, each tap the ``conv_groups`` words of its token (zero outside the grid)."""
        P, G = self.config.lanes, d.conv_groups
        x = self.read(d.src0, t, d.in_height * d.in_width, G * P)
        index = np.array(d.window_tokens(), np.int64)
        out = np.where((index >= 0)[..., None], x[np.maximum(index, 0)], 0)
        return out.reshape(d.tokens, -1)

    def write(self, op: Operand, t: int, values: np.ndarray) -> None:
        """Elements ``[tokens, channels]`` into frame ``t`` (each cut to the bank's element width)."""
        P = self.config.lanes
        tokens, channels = values.shape
        G = n_groups(channels, P)
        padded = np.zeros((tokens, G * P), np.int64)
        padded[:, :channels] = values & ((1 << self._bits(op.bank)) - 1)
        for n in range(tokens):
            a = op.word(t, n, 0)
            self.banks[op.bank][a:a + G] = padded[n].reshape(G, P)

    def params(self, base: int, memory: np.ndarray, channels: int) -> np.ndarray:
        G = n_groups(channels, self.config.lanes)
        return memory[base:base + G].reshape(G * self.config.lanes, *memory.shape[2:])[:channels]

    def weight_matrix(self, d: Descriptor) -> np.ndarray:
        """``W[O, I]`` from the weight store (word ``wbase + g * I + i``, lane ``l``: ``W[g * P + l, i]``)."""
        P, I, O = self.config.lanes, d.in_ch, d.out_ch
        G = n_groups(O, P)
        words = self.weights[d.wbase:d.wbase + G * I].reshape(G, I, P)
        return words.transpose(0, 2, 1).reshape(G * P, I)[:O]

    # -- descriptors ----------------------------------------------------------------------------

    def execute(self, d: Descriptor) -> None:
        if d.kind == Kind.FETCH:
            mem = FETCH_TARGETS[d.fetch_to]
            store = getattr(self, mem.name.lower())
            src, ratio = d.ext_base * EXT_ALIGN, fetch_ratio(self.config, mem)
            end = src + fetch_rows(self.config, mem, d.in_ch) * ratio
            if self.ext is None or end > len(self.ext) or d.wbase + d.in_ch > len(store):
                raise ValueError(f"{d.name}: FETCH of {d.in_ch} {mem.name.lower()} words from {src} to {d.wbase} "
                                 "is out of range")
            values, bits, signed = row_layout(self.config, mem)
            rows = unpack_rows(self.ext[src:end], values, bits, ratio, signed)
            store[d.wbase:d.wbase + d.in_ch] = rows.reshape(d.in_ch, *store.shape[1:])
            self.fetching = (mem, d.wbase, d.wbase + d.in_ch)
            return
        if d.overlap and self.fetching is not None:     # runs beside the FETCH: must not read what it writes
            mem, lo, hi = self.fetching
            used = param_reads(d, self.config).get(mem)
            if used is not None and used[0] < hi and lo < used[1]:
                raise ValueError(f"{d.name}: reads {mem.name.lower()} words {used[0]}-{used[1] - 1} while a FETCH "
                                 f"writes {lo}-{hi - 1}")
        elif not d.overlap:
            self.fetching = None
        if d.kind == Kind.MATMUL:
            w = self.weight_matrix(d)
            accs, counts = [], []
            for t in range(d.steps):
                x = self.read_window(d, t) if d.conv_k else self.read(d.src0, t, d.tokens, d.in_ch)
                mask = self.read(d.src2, t, 1, d.in_ch) if d.mask else None
                if d.mask:
                    x = x * mask
                if d.dense:         # every lane read is an event (in the grid, mask applied)
                    taps = (np.array(d.window_tokens()) >= 0).sum(axis=1) if d.conv_k else 1
                    per = np.count_nonzero(mask) if d.mask else dense_lanes(d, self.config.lanes)
                    counts.append(np.broadcast_to(per * taps, (d.tokens,)))
                else:
                    counts.append(np.count_nonzero(x, axis=1))
                accs.append(x @ w.T)
            self.events[d.name] = np.array(counts).T.ravel()          # tokens outer, steps inner
            if d.reduce:
                accs = [sum(a.sum(axis=0, keepdims=True) for a in accs)]
        elif d.kind == Kind.ELEMENTWISE:
            accs = [self.read(d.src0, t, d.tokens, d.in_ch) for t in range(d.steps)]
        elif d.kind == Kind.MAXPOOL:
            accs = [self.read_window(d, t).reshape(d.tokens, d.conv_k ** 2, -1).max(axis=1)[:, :d.out_ch]
                    for t in range(d.steps)]
        elif d.kind == Kind.LINEAR_ATTENTION:
            accs, k_counts, q_counts = [], [], []
            h, C = d.heads, d.in_ch
            dh = C // h
            for t in range(d.steps):
                q, k, v = (self.read(s, t, d.tokens, C).reshape(d.tokens, h, dh).transpose(1, 0, 2)
                           for s in (d.src0, d.src1, d.src2))
                k_counts.append(np.full(d.tokens, C) if d.dense else np.count_nonzero(k, axis=(0, 2)))
                q_counts.append(np.full(d.tokens, C) if d.dense else np.count_nonzero(q, axis=(0, 2)))
                accs.append((q @ (k.transpose(0, 2, 1) @ v)).transpose(1, 0, 2).reshape(d.tokens, C))
            # the k pass's frames (steps outer), then the q pass's (tokens outer)
            self.events[d.name] = np.concatenate([np.ravel(k_counts), np.array(q_counts).T.ravel()])
        elif d.kind == Kind.COSPIKE:
            accs = [(self.read(d.src0, t, d.tokens, d.in_ch) * self.read(d.src1, t, d.tokens, d.in_ch))
                    .sum(axis=0, keepdims=True) for t in range(d.steps)]
        else:
            raise ValueError(f"{d.name}: no such descriptor kind {d.kind!r}")
        self.post(d, accs)

    def post(self, d: Descriptor, accs: list[np.ndarray]) -> None:
        O = d.out_ch
        mult = self.params(d.mult_base, self.mult, O)
        if d.bias_per_token:
            G = n_groups(O, self.config.lanes)
            bias = np.stack([self.params(d.bias_base + n * G, self.bias, O) for n in range(d.out_tokens)])
        else:
            bias = self.params(d.bias_base, self.bias, O)
        v = None
        for t, acc in enumerate(accs):
            z = acc * mult + bias
            if d.post == Post.NEURON:
                theta = self.params(d.theta_base, self.theta, O)
                h = z if v is None else v - (v >> d.leak) + z
                y = (h[..., None] >= theta).sum(-1)
                v = np.where(y == 0, h, 0)
            else:
                y = z >> d.shift
                if d.post == Post.LOGITS:
                    self.logits[:O] = y[0]
                    continue
                if d.sat:
                    y = _sat(y, d.sat)
                if d.add:
                    y = _sat(y + self.read(d.src1, t, d.out_tokens, O), d.add_width)
            self.write(d.dst, t, y)


def run(program, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``program`` on one sample ``x``; return (logits ``[classes]``, and with ``trace`` every stored
    tensor ``[frames, tokens, channels]`` as read back right after its writer ran)."""
    m = Machine(program.config, program.weights, program.mult, program.bias, program.theta, ext=program.ext)
    inp = program.input
    elements = program.input_elements(x)
    for f in range(inp.frames):
        m.write(program.operands[inp.name], f, elements[f])
    tensors: dict[str, np.ndarray] = {}
    for d, layer in zip(program.descriptors, program.layers):
        m.execute(d)
        if trace and layer.dst:
            t = program.tensors[layer.dst]
            tensors[layer.dst] = np.stack([m.read(program.operands[t.name], f, t.tokens, t.channels)
                                           for f in range(t.frames)])
    return m.logits[:program.classes].copy(), tensors
