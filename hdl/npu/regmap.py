"""The overlay's host-bus address map (32-bit words; :mod:`hdl.hostbus`), shared by its bus front end
(:class:`hdl.npu.bus.OverlayBus`) and the host driver (``compiler.host.npu``).

The map is a function of the overlay's :class:`hdl.npu.isa.Config` (:class:`AddressMap`). A word address
splits into a region (the high bits, from :attr:`AddressMap.region_shift`) and an offset:

==============  ==========================================================================================
region 0        registers (below)
region 1 + m    memory ``m`` (:class:`hdl.npu.isa.Mem`, by its value): chunk ``c`` (32 bits, lowest first)
                of word ``w`` at offset ``w << chunk_bits[m] | c``. Writing a memory's last chunk
                (``c == chunks[m] - 1``) writes the whole word: the earlier chunks come from a staging
                register that every other chunk write fills (and that a commit leaves as it is). Writes
                are idempotent (a retried burst writes the same words) and dropped while the overlay runs.
                Reading gives chunk ``c`` of the word as the overlay's peek port reads it: the scratchpad
                banks ``SPIKES`` and ``WIDE`` and the ``LOGITS`` (signed ``logit_bits``-bit values) only.
==============  ==========================================================================================

Registers (region 0, offset):

* :data:`REG_MAGIC` read: :data:`MAGIC`, which tells the overlay from any other bitstream (0.1's
  one-engine-per-layer accelerators answered a model identifier there);
* :data:`REG_CONFIG` read: :func:`config_hash` of the configuration the gateware was elaborated with (the
  host refuses a program compiled for another one);
* :data:`REG_CTRL` write :data:`CTRL_START`: run the program from descriptor 0 (ignored while it runs);
* :data:`REG_STATUS` read: :data:`STATUS_BUSY`, :data:`STATUS_DONE` (the last run reached END),
  :data:`STATUS_ERROR` (it stopped at a descriptor the gateware cannot run);
* :data:`REG_PC` read: the descriptor running, or where the last run stopped;
* :data:`REG_CYCLES` read: cycles of the last run (32 bits).

A configuration with an external memory (``Config.ext_depth`` > 0: the weights that ``FETCH`` streams, in the
board's SDRAM) has five more registers and a write window in region 0, through which the host fills it:

* :data:`REG_EXT_ADDR` write: the external word address (16-bit words, even) of the next data word; it also
  restarts :data:`REG_EXT_CRC`, clears :data:`EXT_LOST` and sets :data:`REG_EXT_ID` to 0. Read: the address
  the next data word goes to;
* the **data window**, offsets :attr:`AddressMap.ext_window` up to twice that (any of them: the host's bursts
  write consecutive addresses): a 32-bit write is two external words, its low half first, at the address,
  which then moves on by two. Each waits in a FIFO of :data:`EXT_FIFO_DEPTH` words for the memory: the host
  writes at most that many, then waits for :data:`EXT_IDLE`. A word written while the FIFO is full or the
  overlay runs is dropped and sets :data:`EXT_LOST`;
* :data:`REG_EXT_STATUS` read: :data:`EXT_READY` (the memory is initialised), :data:`EXT_IDLE` (every word
  written has reached the memory), :data:`EXT_LOST`;
* :data:`REG_EXT_CRC` read: the CRC-32 (``binascii.crc32``) of the data words taken since the address was
  written, as little-endian bytes;
* :data:`REG_EXT_ID` read and write: the identifier of the image in the memory, which the host writes after
  a load whose CRC it checked, and compares before a run (0: none; power-up and :data:`REG_EXT_ADDR` clear it).

Reads answer :data:`hdl.hostbus.READ_LATENCY` cycles after ``re``, one at a time (the host waits for each).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

from ..packing import index_bits
from .isa import DESCRIPTOR_FIELDS, WORD_BITS, Config, Mem
from .overlay import Overlay

__all__ = ["MAGIC", "MAP_VERSION", "REG_MAGIC", "REG_CONFIG", "REG_CTRL", "REG_STATUS", "REG_PC", "REG_CYCLES",
           "REG_EXT_ADDR", "REG_EXT_STATUS", "REG_EXT_CRC", "REG_EXT_ID", "EXT_READY", "EXT_IDLE", "EXT_LOST",
           "EXT_FIFO_DEPTH", "REGISTERS", "CTRL_START", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "MAX_ADDR_WIDTH",
           "config_hash", "word_bits", "AddressMap"]

MAGIC = 0x4E505530          # "NPU0"
MAP_VERSION = 1             # part of the configuration hash: a change of this map makes old hosts refuse

REG_MAGIC = 0x0
REG_CONFIG = 0x1
REG_CTRL = 0x2
REG_STATUS = 0x3
REG_PC = 0x4
REG_CYCLES = 0x5
REG_EXT_ADDR = 0x6          # this and the next three: configurations with an external memory only
REG_EXT_STATUS = 0x7
REG_EXT_CRC = 0x8
REG_EXT_ID = 0x9
REGISTERS = 10              # offsets 0 .. REGISTERS - 1 (a read elsewhere in region 0 gives 0)

CTRL_START = 1
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4
EXT_READY, EXT_IDLE, EXT_LOST = 1, 2, 4
#: 32-bit words that the external memory's write FIFO holds (one DP16KD's depth at 36 bits).
EXT_FIFO_DEPTH = 512

MAX_ADDR_WIDTH = 24         # the UART frames' addresses (hdl.protocol.ADDR_BYTES)


def config_hash(config: Config) -> int:
    """32 bits identifying ``config`` (every field of it, by name), the descriptor format and this address
    map: equal on host and gateware exactly when a program compiled for one runs on the other."""
    text = repr((MAP_VERSION, [(f.name, getattr(config, f.name)) for f in fields(config)], DESCRIPTOR_FIELDS,
                 [(mem.name, int(mem)) for mem in Mem]))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# Bits of one word of each memory (``hdl.npu.isa``'s layouts); a memory not listed here is taken to be as
# wide as the overlay's load port.
_WORD_BITS = {
    "PROGRAM": lambda c: WORD_BITS,
    "SPIKES": lambda c: c.lanes * c.spike_bits,
    "WIDE": lambda c: c.lanes * c.wide_bits,
    "WEIGHTS": lambda c: c.lanes * c.weight_bits,
    "MULT": lambda c: c.post_width * c.mult_bits,
    "BIAS": lambda c: c.post_width * c.bias_bits,
    "THETA": lambda c: c.post_width * c.levels * c.theta_bits,
    "LOGITS": lambda c: c.logit_bits,
}


def word_bits(config: Config, mem: Mem, max_word: int) -> int:
    """Bits of a word of ``mem`` (at most ``max_word``, the overlay's load and peek port width)."""
    width = _WORD_BITS.get(mem.name)
    return min(width(config), max_word) if width else max_word


@dataclass(frozen=True)
class AddressMap:
    """The address map of the overlay of ``config`` (see the module's description).

    Attributes
    ----------
    word_bits, chunks, chunk_bits : dict[Mem, int]
        Per memory: bits of a word, 32-bit chunks per word, and the offset bits that select a chunk.
    index_bits : int
        Offset bits above a memory's chunk bits that select its word (the overlay's load address width).
    region_shift : int
        The offset's width: the region is ``addr >> region_shift``.
    addr_width : int
        Bits of a bus address (at most :data:`MAX_ADDR_WIDTH`, else ValueError).
    max_word : int
        The overlay's load and peek port width.
    ext_window : int
        The first offset (in region 0) of the external memory's data window, and its size.
    """
    config: Config
    word_bits: dict = field(init=False, compare=False)
    chunks: dict = field(init=False, compare=False)
    chunk_bits: dict = field(init=False, compare=False)
    index_bits: int = field(init=False, compare=False)
    region_shift: int = field(init=False, compare=False)
    addr_width: int = field(init=False, compare=False)
    max_word: int = field(init=False, compare=False)
    ext_window: int = field(init=False, compare=False)

    def __post_init__(self):
        overlay = Overlay(self.config)          # for its port widths only (never elaborated):
        overlay._MustUse__silence = True        # no "created but never used" warning
        wb = {mem: word_bits(self.config, mem, overlay.max_word) for mem in Mem}
        chunks = {mem: -(-bits // 32) for mem, bits in wb.items()}
        cbits = {mem: index_bits(n) for mem, n in chunks.items()}
        shift = max(index_bits(REGISTERS) + 1, overlay.addr_width + max(cbits.values()))
        width = shift + index_bits(len(Mem) + 1)
        if width > MAX_ADDR_WIDTH:
            raise ValueError(f"the overlay's address map needs {width}-bit addresses, the host link carries "
                             f"{MAX_ADDR_WIDTH}: fewer lanes or smaller memories")
        for name, value in (("word_bits", wb), ("chunks", chunks), ("chunk_bits", cbits),
                            ("index_bits", overlay.addr_width), ("region_shift", shift), ("addr_width", width),
                            ("max_word", overlay.max_word), ("ext_window", 1 << (shift - 1))):
            object.__setattr__(self, name, value)

    def region(self, mem: Mem) -> int:
        """The region of memory ``mem``."""
        return 1 + int(mem)

    def address(self, mem: Mem, word: int, chunk: int = 0) -> int:
        """The bus address of chunk ``chunk`` of word ``word`` of ``mem``."""
        if not 0 <= word < 1 << self.index_bits or not 0 <= chunk < self.chunks[mem]:
            raise ValueError(f"{mem.name}: word {word}, chunk {chunk} is outside the map")
        return self.region(mem) << self.region_shift | word << self.chunk_bits[mem] | chunk

    def split(self, mem: Mem, value: int) -> list[int]:
        """A word of ``mem`` (an integer, two's complement if negative) as its 32-bit chunks, lowest first."""
        value = int(value) & ((1 << self.word_bits[mem]) - 1)
        return [(value >> (32 * c)) & 0xFFFFFFFF for c in range(self.chunks[mem])]

    @staticmethod
    def join(chunks) -> int:
        """32-bit chunks (lowest first) -> the word."""
        return sum(int(v) << (32 * c) for c, v in enumerate(chunks))

    def runs(self, mem: Mem, start: int, words) -> list[tuple[int, list[int]]]:
        """The bus writes of ``words`` (integers) at words ``start, start + 1, ..`` of ``mem``: ``(address,
        chunks)`` runs of consecutive addresses, each word's chunks lowest first, so its last chunk commits it."""
        out: list[tuple[int, list[int]]] = []
        for k, value in enumerate(words):
            addr, chunks = self.address(mem, start + k), self.split(mem, value)
            if out and out[-1][0] + len(out[-1][1]) == addr:
                out[-1][1].extend(chunks)
            else:
                out.append((addr, chunks))
        return out
