"""The overlay's instruction set: the layer descriptor, its binary format and the memory layouts it addresses.

One module that the compiler (which writes programs and memory images) and the gateware (which executes
them) share, so that a field or a layout is stated once. ``docs/architecture.md`` describes how a program
runs; the arithmetic of each descriptor kind is the IR's (``docs/semantics.md``), which the program
interpreter ``sim.npu_model`` executes on these layouts.

Memories of the overlay (sizes in :class:`Config`):

* **scratchpad banks** ``SPIKES`` and ``WIDE``: words of ``lanes`` elements (``spike_bits`` / ``wide_bits``
  bits each, lane ``l`` in bits ``[l * bits, (l + 1) * bits)``). A tensor ``[T, N, C]`` is stored at
  ``base + t * tstep + n * nstep + g`` for channel group ``g = c // lanes`` (lane ``c % lanes``);
  ``tstep = 0`` (or ``nstep = 0``) repeats one frame (token) for every step (token). See
  :class:`Operand`.
* **weight store**: words of ``lanes`` signed ``weight_bits``-bit weights. A layer's ``W[O, I]`` is at
  ``wbase + g * I + i``, lane ``l`` holding ``W[g * lanes + l, i]`` (zero past ``O``): the ``I`` words of
  one output group are contiguous (a tile that a later external-memory stream fills while the engine
  works on the previous one).
* **parameter memories** ``MULT``, ``BIAS``, ``THETA``: words of ``lanes`` values of ``mult_bits``,
  ``bias_bits`` and ``levels * theta_bits`` bits; a layer's group ``g`` at ``mult_base + g``,
  ``bias_base + g`` (``bias_base + n * groups + g`` with a per-token bias) and ``theta_base + g``.
* **K^T V store** (the linear attention's, inside the overlay): words of ``lanes`` signed ``kv_bits``-bit
  values. Step ``t``'s entry ``KV[i, c]`` (``c`` in the head of input channel ``i``) is lane ``c % lanes`` of word
  ``t * C * S + i * S + (c // lanes - g0)``, with ``g0`` the first lane group of that head and ``S`` =
  the descriptor's ``head_span`` (:func:`head_span`); lanes outside the head hold 0.
* **logits**: ``classes`` signed ``logit_bits``-bit registers, written by the ``LOGITS`` post operation.
* **external memory** (``Config.ext_depth`` weight-store words' worth, 0 for none): 16-bit SDRAM words. A
  ``FETCH`` copies a run of them into the weight store or a parameter memory (``fetch_to``), each of that
  memory's words (a *row*) as :func:`fetch_ratio` consecutive SDRAM words, the first in the low bits
  (:func:`pack_rows`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace

import numpy as np
from amaranth.hdl import unsigned
from amaranth.lib import data

__all__ = ["EXT_ALIGN", "EXT_WORD_BITS", "FETCH_TARGETS", "row_layout", "fetch_ratio", "fetch_rows", "param_reads", "pack_rows",
           "unpack_rows", "Bank", "Mem", "Kind", "pack_lanes", "unpack_lanes", "Post", "Operand", "Descriptor", "Config", "DESCRIPTOR_FIELDS", "DESCRIPTOR_WORDS", "head_span",
           "WORD_BITS", "descriptor_layout"]

WORD_BITS = 32          # the host bus word: a descriptor is written as DESCRIPTOR_WORDS of these
#: FETCH's source is a multiple of this many 16-bit external memory words (``ext_base`` counts them): the 17-bit
#: field reaches 2 ** 24 words, the ULX3S's 32 MB.
EXT_ALIGN = 128
#: Bits of an external memory word (the SDRAM's).
EXT_WORD_BITS = 16


class Bank(enum.IntEnum):
    """The scratchpad bank of an operand."""
    SPIKES = 0          # spike levels (and sdsa1's masks): narrow elements
    WIDE = 1            # pixels, the residual stream: wide signed elements


class Mem(enum.IntEnum):
    """The overlay's memories as its load port (``load_mem``) and peek port (``peek_mem``) name them."""
    PROGRAM = 0         # WORD_BITS-bit words, descriptor k at k * DESCRIPTOR_WORDS
    SPIKES = 1          # the scratchpad banks (Bank), lanes packed LSB first
    WIDE = 2
    WEIGHTS = 3
    MULT = 4
    BIAS = 5
    THETA = 6           # lane l's thresholds k = 0 .. levels - 1 at bits (l * levels + k) * theta_bits
    LOGITS = 7          # peek only: logit k at address k


def pack_lanes(values, width: int) -> int:
    """Integers (a word's lanes, first lane first) -> one word of ``width`` bits per lane (two's complement)."""
    mask, word = (1 << width) - 1, 0
    for l, v in enumerate(values):
        word |= (int(v) & mask) << (l * width)
    return word


def unpack_lanes(word: int, count: int, width: int, signed: bool) -> list[int]:
    out = []
    for l in range(count):
        v = (int(word) >> (l * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if signed and v >> (width - 1) else v)
    return out


class Kind(enum.IntEnum):
    """What a descriptor computes before its post operation (the accumulator value per output element)."""
    END = 0             # stop: the inference is done
    MATMUL = 1          # acc[t,n,o] = sum_i W[o,i] * src0[t,n,i] (src0 ANDed with the mask src2[t,0,i] if `mask`);
                        # with `reduce`, one sum over every (t, n): acc[o] = sum_{t,n,i} W[o,i] * src0[t,n,i]
    ELEMENTWISE = 2     # acc[t,n,o] = src0[t,n,o]
    LINEAR_ATTENTION = 3  # acc = per head h: src0 (q) @ (src1 (k)^T @ src2 (v)) over the head's channels; the
                        # K^T V products of every step are built first (kv store), then read per token
    COSPIKE = 4         # acc[t,0,c] = sum_n src0[t,n,c] * src1[t,n,c]
    MAXPOOL = 5         # acc[t,n,c] = max over the window (conv_*) of src0 (non-negative values, 0 outside)
    FETCH = 6           # memory fetch_to (weights, mult, bias, theta): in_ch words (a parameter memory: in_ch lane
                        # groups of post_steps rows each) from the external memory at ext_base * EXT_ALIGN to wbase
                        # (a group), before the layers that read them (fetch_rows, fetch_ratio); it runs while
                        # the next descriptor does if that one has `overlap`


class Post(enum.IntEnum):
    """What is done with each accumulator value ``acc`` (always ``z = acc * mult[o] + bias[(n,) o]`` first)."""
    REQUANT = 0         # y = sat_{sat}(z >> shift), then with `add`: y = sat_{add_width}(y + src1[t,n,o])
    NEURON = 1          # H = V - (V >> leak) + z; y = #{k : H >= theta[o,k]}; V = H if y == 0 else 0 (V = 0 at t=0)
    LOGITS = 2          # logits[o] = z >> shift (no saturation), written once the reduction is done


@dataclass(frozen=True)
class Operand:
    """Where a tensor is in the scratchpad: element ``[t, n, c]`` is lane ``c % lanes`` of word
    ``base + t * tstep + n * nstep + c // lanes`` of ``bank``."""
    bank: Bank = Bank.SPIKES
    base: int = 0
    tstep: int = 0
    nstep: int = 0

    def word(self, t: int, n: int, group: int) -> int:
        return self.base + t * self.tstep + n * self.nstep + group


#: The descriptor's fields and their widths, packed LSB first (the order is the binary format).
DESCRIPTOR_FIELDS: tuple[tuple[str, int], ...] = (
    ("kind", 3), ("post", 2), ("add", 1), ("mask", 1), ("reduce", 1), ("bias_per_token", 1),
    ("tokens", 12), ("steps", 4), ("in_ch", 16), ("out_ch", 12), ("heads", 6), ("head_groups", 12), ("head_lanes", 6), ("head_span", 11), ("out_tokens", 12),
    ("src0_bank", 1), ("src0_base", 16), ("src0_tstep", 16), ("src0_nstep", 16),
    ("src1_bank", 1), ("src1_base", 16), ("src1_tstep", 16), ("src1_nstep", 16),
    ("src2_bank", 1), ("src2_base", 16), ("src2_tstep", 16), ("src2_nstep", 16),
    ("dst_bank", 1), ("dst_base", 16), ("dst_tstep", 16), ("dst_nstep", 16),
    ("wbase", 20), ("mult_base", 14), ("bias_base", 16), ("theta_base", 14),
    ("shift", 6), ("leak", 5), ("sat", 6), ("add_width", 6),
    ("conv_k", 3), ("conv_stride", 3), ("conv_pad", 3), ("conv_groups", 8), ("in_height", 9), ("in_width", 9),
    ("out_width", 9), ("conv_rowstep", 16), ("conv_origin", 16),
    ("ext_base", 17), ("fetch_to", 2), ("overlap", 1), ("dense", 1),
)
_FIELD_BITS = dict(DESCRIPTOR_FIELDS)
DESCRIPTOR_BITS = sum(_FIELD_BITS.values())
DESCRIPTOR_WORDS = -(-DESCRIPTOR_BITS // WORD_BITS)


def descriptor_layout() -> data.StructLayout:
    """The descriptor as an Amaranth layout (the gateware's view of :data:`DESCRIPTOR_FIELDS`)."""
    return data.StructLayout({name: unsigned(bits) for name, bits in DESCRIPTOR_FIELDS})


@dataclass(frozen=True)
class Descriptor:
    """One layer of a program. ``name`` (the IR op it starts with) is the listing's, not part of the binary."""
    kind: Kind
    name: str = ""
    post: Post = Post.REQUANT
    add: bool = False
    mask: bool = False
    reduce: bool = False
    bias_per_token: bool = False
    tokens: int = 1               # N: tokens of src0 (and of dst, but for COSPIKE, whose dst has one)
    steps: int = 1                # T: time steps computed
    in_ch: int = 1                # I: channels of src0
    out_ch: int = 1               # O: channels of dst
    heads: int = 1
    head_groups: int = 0          # LINEAR_ATTENTION: a head's channels C / heads = head_groups * lanes + head_lanes
    head_lanes: int = 0
    head_span: int = 1            # LINEAR_ATTENTION: :func:`head_span`
    out_tokens: int = 1           # tokens of dst (N, or 1 for COSPIKE and the head)
    src0: Operand = field(default_factory=Operand)
    src1: Operand = field(default_factory=Operand)
    src2: Operand = field(default_factory=Operand)
    dst: Operand = field(default_factory=Operand)
    wbase: int = 0
    mult_base: int = 0
    bias_base: int = 0
    theta_base: int = 0
    shift: int = 0
    leak: int = 0
    sat: int = 0                  # signed saturation width of REQUANT's result, 0 = none
    add_width: int = 0            # signed saturation width of the residual add
    # a k x k window over src0's tokens as an in_height x in_width grid (MATMUL: a convolution, MAXPOOL): frame
    # n is the output token (oy, ox) = divmod(n, out_width); its words are, tap (dy, dx) by tap (row-major), the
    # conv_groups lane groups of src0's token (oy * stride + dy - pad, ox * stride + dx - pad), zero outside the
    # grid (in_ch = conv_k**2 * conv_groups * lanes, the weights' I); conv_rowstep = in_width * src0.nstep and
    # conv_origin = pad * (conv_rowstep + src0.nstep), the word offsets of a row and of the window's origin
    conv_k: int = 0               # 0: no window (src0's token n is frame n)
    conv_stride: int = 1
    conv_pad: int = 0
    conv_groups: int = 0
    in_height: int = 0
    in_width: int = 0
    out_width: int = 0
    conv_rowstep: int = 0
    conv_origin: int = 0
    ext_base: int = 0             # FETCH: the source, in units of EXT_ALIGN external words (in_ch: the word count)
    fetch_to: int = 0             # FETCH: the memory written, as FETCH_TARGETS[fetch_to]
    # a FETCH runs beside the descriptors after it: each of them but a FETCH or END waits for it to finish unless
    # it has ``overlap`` (it reads nothing that the FETCH writes); a FETCH waits for the one before it
    overlap: bool = False
    # MATMUL and LINEAR_ATTENTION: every lane the engine reads is an event, zeros too (the mask and the window's
    # grid still apply): the same sums, at the cost of a schedule that is not event-driven (``--dense``'s baseline)
    dense: bool = False

    def window(self, n: int, tap: int) -> tuple[int, int] | None:
        """The src0 token (as ``(y, x)``) of output token ``n``'s window tap ``tap`` (``dy * conv_k + dx``), or
        None outside the grid."""
        oy, ox = divmod(n, self.out_width)
        dy, dx = divmod(tap, self.conv_k)
        y, x = oy * self.conv_stride + dy - self.conv_pad, ox * self.conv_stride + dx - self.conv_pad
        return (y, x) if 0 <= y < self.in_height and 0 <= x < self.in_width else None

    def window_tokens(self) -> list[list[int]]:
        """Per output token, the src0 token (``y * in_width + x``) of each window tap (:meth:`window`), -1
        outside the grid."""
        return [[-1 if at is None else at[0] * self.in_width + at[1]
                 for at in (self.window(n, tap) for tap in range(self.conv_k ** 2))] for n in range(self.tokens)]

    def flat(self) -> dict[str, int]:
        """The binary fields by name (:data:`DESCRIPTOR_FIELDS`)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Operand):
                for part in ("bank", "base", "tstep", "nstep"):
                    out[f"{f.name}_{part}"] = int(getattr(value, part))
            elif f.name != "name":
                out[f.name] = int(value)
        return out

    def encode(self) -> list[int]:
        """The descriptor as :data:`DESCRIPTOR_WORDS` words of :data:`WORD_BITS` bits (first word first).

        Raises ValueError if a field does not fit its width."""
        flat, value, pos = self.flat(), 0, 0
        for name, bits in DESCRIPTOR_FIELDS:
            v = flat[name]
            if not 0 <= v < (1 << bits):
                raise ValueError(f"{self.name or self.kind.name}: field {name} = {v} does not fit {bits} bits")
            value |= v << pos
            pos += bits
        mask = (1 << WORD_BITS) - 1
        return [(value >> (WORD_BITS * k)) & mask for k in range(DESCRIPTOR_WORDS)]

    @classmethod
    def decode(cls, words: list[int], name: str = "") -> "Descriptor":
        value = sum(int(w) << (WORD_BITS * k) for k, w in enumerate(words))
        flat, pos = {}, 0
        for fname, bits in DESCRIPTOR_FIELDS:
            flat[fname] = (value >> pos) & ((1 << bits) - 1)
            pos += bits
        operands = {op: Operand(Bank(flat.pop(f"{op}_bank")), flat.pop(f"{op}_base"), flat.pop(f"{op}_tstep"),
                                flat.pop(f"{op}_nstep")) for op in ("src0", "src1", "src2", "dst")}
        kw = {k: (bool(v) if isinstance(getattr(cls, k, None), bool) else v) for k, v in flat.items()}
        return cls(kind=Kind(kw.pop("kind")), post=Post(kw.pop("post")), name=name, **operands, **kw)


def head_span(head_channels: int, heads: int, lanes: int) -> int:
    """The most lane groups that one of ``heads`` heads of ``head_channels`` channels each touches (head ``h``
    starts at channel ``h * head_channels``): the K^T V store's row stride and the attention engine's groups
    per event."""
    return max((h * head_channels % lanes + head_channels + lanes - 1) // lanes for h in range(heads))


@dataclass(frozen=True)
class Config:
    """One overlay configuration: everything its gateware is elaborated with. A program runs on it if every
    one of its descriptors fits these sizes and widths (``compiler.hw.program`` checks)."""
    lanes: int = 16
    spike_bits: int = 3           # bits of a spike-bank element (levels up to 2**spike_bits - 1)
    wide_bits: int = 16           # bits of a wide-bank element (signed)
    event_bits: int = 9           # signed bits of an event level the sparse engine multiplies (pixels: 9)
    spike_depth: int = 2048       # words of each bank
    wide_depth: int = 2048
    weight_bits: int = 4
    weight_depth: int = 8192
    acc_bits: int = 20            # signed accumulator
    mult_bits: int = 18           # signed per-channel multiplier
    bias_bits: int = 32           # signed per-channel bias
    post_bits: int = 40           # signed width of z = acc * mult + bias and of the membrane
    levels: int = 4               # thresholds per neuron channel
    theta_bits: int = 24          # signed threshold
    param_depth: int = 1024       # words of each parameter memory
    out_groups: int = 32          # lane groups of a layer's output (accumulator and membrane words)
    kv_bits: int = 16             # signed element of the linear attention's K^T V store
    kv_depth: int = 1024          # words of the K^T V store (steps * channels * groups spanned by a head)
    program_depth: int = 256      # descriptors
    classes: int = 16             # logit registers
    logit_bits: int = 40
    post_lanes: int = 0           # lanes the post unit computes per cycle, a divisor of lanes (0: all of them)
    ext_depth: int = 0            # weight-store words of external memory that FETCH reads (0: none, no FETCH)

    def __post_init__(self):
        if self.lanes < 1 or not 0 <= self.post_lanes <= self.lanes or self.lanes % self.post_width:
            raise ValueError(f"post_lanes must divide lanes ({self.lanes}), not {self.post_lanes}")

    @property
    def post_width(self) -> int:
        """Lanes of one post-unit step: the post unit takes ``post_steps`` cycles per group of ``lanes``."""
        return self.post_lanes or self.lanes

    @property
    def post_steps(self) -> int:
        return self.lanes // self.post_width

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)


#: The memories a FETCH writes, by its ``fetch_to`` field.
FETCH_TARGETS = (Mem.WEIGHTS, Mem.MULT, Mem.BIAS, Mem.THETA)


def row_layout(config: Config, mem: Mem) -> tuple[int, int, bool]:
    """One word (row) of a fetchable memory: (values, bits of each, signed). The weight store's rows are lane
    groups; a parameter memory's are the post unit's steps of ``post_width`` lanes (a group in ``post_steps``
    rows), the thresholds ``levels`` values per lane."""
    c, Q = config, config.post_width
    return {Mem.WEIGHTS: (c.lanes, c.weight_bits, True), Mem.MULT: (Q, c.mult_bits, True),
            Mem.BIAS: (Q, c.bias_bits, True), Mem.THETA: (Q * c.levels, c.theta_bits, True)}[mem]


def fetch_ratio(config: Config, mem: Mem) -> int:
    """External words per row of ``mem``."""
    values, bits, _ = row_layout(config, mem)
    return -(-values * bits // EXT_WORD_BITS)


def fetch_rows(config: Config, mem: Mem, count: int) -> int:
    """Rows that a FETCH of ``count`` (its ``in_ch``: words, or a parameter memory's lane groups) writes."""
    return count if mem == Mem.WEIGHTS else count * config.post_steps


_CHUNK = 1 << 16        # rows packed at a time (a bit a byte in between)


def pack_rows(values: np.ndarray, bits: int, ratio: int) -> np.ndarray:
    """Rows of integers ``[rows, values]`` (two's complement in ``bits`` each, the first value in the low bits)
    -> ``uint16`` external words ``[rows * ratio]``, ``ratio`` a row, the first word the row's low bits."""
    values = np.asarray(values, dtype=np.int64)
    rows, n = values.shape
    out = np.zeros((rows, ratio * EXT_WORD_BITS // 8), np.uint8)
    shifts = np.arange(bits, dtype=np.int64)
    for lo in range(0, rows, _CHUNK):
        v = values[lo:lo + _CHUNK]
        b = ((v[..., None] >> shifts) & 1).astype(np.uint8).reshape(len(v), n * bits)
        padded = np.zeros((len(v), ratio * EXT_WORD_BITS), np.uint8)
        padded[:, :n * bits] = b
        out[lo:lo + _CHUNK] = np.packbits(padded, axis=1, bitorder="little")
    return out.view("<u2").reshape(-1).astype(np.uint16)


def unpack_rows(words: np.ndarray, values: int, bits: int, ratio: int, signed: bool) -> np.ndarray:
    """:func:`pack_rows`' inverse: external words ``[rows * ratio]`` -> ``[rows, values]``."""
    w = np.ascontiguousarray(np.asarray(words, dtype="<u2").reshape(-1, ratio))
    b = np.unpackbits(w.view(np.uint8), axis=1, bitorder="little")[:, :values * bits]
    b = b.reshape(len(w), values, bits).astype(np.int64)
    out = (b << np.arange(bits, dtype=np.int64)).sum(axis=2)
    if signed:
        out = np.where(out >> (bits - 1) & 1, out - (1 << bits), out)
    return out


def param_reads(d: Descriptor, config: Config) -> dict[Mem, tuple[int, int]]:
    """The words ``[lo, hi)`` that descriptor ``d`` reads of the memories a FETCH writes: the weight store's,
    and the parameter memories' in lane groups (the units of a FETCH's ``wbase`` and ``in_ch``)."""
    if d.kind in (Kind.FETCH, Kind.END):
        return {}
    G = -(-d.out_ch // config.lanes)
    out = {Mem.MULT: (d.mult_base, d.mult_base + G),
           Mem.BIAS: (d.bias_base, d.bias_base + G * (d.out_tokens if d.bias_per_token else 1))}
    if d.kind == Kind.MATMUL:
        out[Mem.WEIGHTS] = (d.wbase, d.wbase + G * d.in_ch)
    if d.post == Post.NEURON:
        out[Mem.THETA] = (d.theta_base, d.theta_base + G)
    return out
