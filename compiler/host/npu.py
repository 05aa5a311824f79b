"""The host driver of the overlay (``hdl.npu``): loads a compiled program (``compiler.hw.program.Program``)
through the overlay's address map (:mod:`hdl.npu.regmap`), writes a sample, runs it and reads its logits.

It works on any bus with the two methods of :class:`compiler.host.link.Link` it uses, ``write_words(addr,
words)`` and ``read_words(addr, count)``: a ``Link`` to a board (or to ``sim.uart_sim``'s simulated board),
``sim.verilator_host.Session`` (the Verilated overlay, no UART) or ``sim.amaranth_bus.AmaranthBus``::

    driver = NpuDriver(Link(SerialPort("/dev/ttyUSB0", 3_000_000)))
    driver.load(program)                  # refuses a program compiled for another configuration
    logits, cycles = driver.infer(x)
"""

from __future__ import annotations

import binascii
import time
from typing import Callable, Protocol

import numpy as np

from hdl.npu import regmap
from hdl.npu.isa import Bank, Config, Mem, pack_lanes, unpack_lanes
from hdl.npu.regmap import AddressMap, config_hash

from ..errors import UserError
from ..hw.program import Program
from .link import LinkTimeout

__all__ = ["Bus", "NpuError", "ConfigMismatch", "NpuDriver"]


class Bus(Protocol):
    """What :class:`NpuDriver` needs of its transport (``compiler.host.link.Link`` has it). A transport that
    can poll a register on its side (``sim.verilator_host.Session``) may also have ``wait(addr, mask, value,
    max_cycles)``, which :meth:`NpuDriver.wait` then uses before its own polling."""

    def write_words(self, addr: int, words) -> None: ...

    def read_words(self, addr: int, count: int) -> np.ndarray: ...


class NpuError(Exception):
    """The device is not an overlay, or a run stopped with ``error`` (a descriptor its gateware cannot run)."""


class ConfigMismatch(UserError):
    """The overlay on the device was built for another configuration than the program's."""


class NpuDriver:
    """Runs compiled programs on the overlay behind ``bus`` (see the module's description).

    Parameters
    ----------
    bus : Bus
        The transport.
    config : hdl.npu.isa.Config, optional
        The device's configuration, for memory access before any program is loaded (:meth:`load` sets it
        to the program's).
    write_chunk : int
        32-bit words per ``bus.write_words`` call while loading (``progress`` is called after each).
    max_cycles : int
        The limit given to a transport's own ``wait`` (see :class:`Bus`).
    """

    def __init__(self, bus: Bus, config: Config | None = None, *, write_chunk: int = 4096,
                 max_cycles: int = 1 << 31):
        self.bus = bus
        self.write_chunk = write_chunk
        self.max_cycles = max_cycles
        self.program: Program | None = None
        self._ext_id: int | None = None          # the loaded program's external image's identifier, if it has one
        self.map: AddressMap | None = None if config is None else AddressMap(config)

    # -- identification -------------------------------------------------------------------------------

    def device_config(self) -> int:
        """The device's configuration hash (``hdl.npu.regmap.config_hash``); NpuError if it is no overlay."""
        magic, digest = (int(v) for v in self.bus.read_words(regmap.REG_MAGIC, 2))
        if magic != regmap.MAGIC:
            raise NpuError(f"the device is not an overlay (word 0 is 0x{magic:08x}, not 0x{regmap.MAGIC:08x})")
        return digest

    def check(self, program: Program) -> None:
        """ConfigMismatch unless the device's overlay was built for ``program.config``."""
        want, got = config_hash(program.config), self.device_config()
        if got != want:
            raise ConfigMismatch(f"the device's overlay has configuration {got:08x}, the program was compiled for "
                                 f"{want:08x} ({program.config}): rebuild one for the other")

    # -- memories --------------------------------------------------------------------------------------

    def _map(self) -> AddressMap:
        if self.map is None:
            raise NpuError("no configuration: load a program (NpuDriver.load) or give one")
        return self.map

    def write_memory(self, mem: Mem, start: int, words, progress: Callable[[int], None] | None = None) -> None:
        """Write ``words`` (integers of ``mem``'s layout) at words ``start, start + 1, ..`` of ``mem``."""
        for addr, chunks in self._map().runs(mem, start, words):
            for k in range(0, len(chunks), self.write_chunk):
                part = chunks[k:k + self.write_chunk]
                self.bus.write_words(addr + k, part)
                if progress:
                    progress(len(part))

    def read_memory(self, mem: Mem, start: int, count: int) -> list[int]:
        """``count`` words of ``mem`` from word ``start`` (only the scratchpad banks and the logits read back)."""
        amap = self._map()
        n = amap.chunks[mem]
        if n == 1 << amap.chunk_bits[mem]:              # no gaps between words: one read
            flat = self.bus.read_words(amap.address(mem, start), count * n) if count else []
            return [amap.join(flat[k * n:(k + 1) * n]) for k in range(count)]
        return [amap.join(self.bus.read_words(amap.address(mem, start + k), n)) for k in range(count)]

    def read_bank(self, bank: Bank, start: int, count: int) -> np.ndarray:
        """Elements ``[count, lanes]`` of scratchpad words ``start ..`` of ``bank`` (raw bits, as stored)."""
        amap, mem = self._map(), Mem[bank.name]
        lanes = amap.config.lanes
        bits = amap.word_bits[mem] // lanes
        return np.array([unpack_lanes(w, lanes, bits, False) for w in self.read_memory(mem, start, count)],
                        dtype=np.int64).reshape(count, lanes)

    def read_tensor(self, name: str) -> np.ndarray:
        """Stored tensor ``name`` of the loaded program as the scratchpad holds it now, ``[frames, tokens,
        channels]`` (signed in the wide bank), read as ``sim.npu_model.Machine.read`` reads it."""
        program, amap = self._loaded(), self._map()
        t, op = program.tensors[name], program.operands[name]
        lanes = amap.config.lanes
        groups = -(-t.channels // lanes)
        last = op.word(t.frames - 1, t.tokens - 1, groups)
        raw = self.read_bank(op.bank, op.base, last - op.base)
        out = np.stack([np.stack([raw[op.word(f, n, 0) - op.base:op.word(f, n, 0) - op.base + groups].reshape(-1)
                                  for n in range(t.tokens)]) for f in range(t.frames)])[..., :t.channels]
        if op.bank == Bank.WIDE:
            bits = amap.config.wide_bits
            out = np.where(out >> (bits - 1) & 1, out - (1 << bits), out)
        return out

    # -- a program -------------------------------------------------------------------------------------

    def load(self, program: Program, progress: Callable[[int], None] | None = None, *,
             external: bool = True) -> None:
        """Check the device's configuration, then write ``program``'s images (``Program.images``: program,
        weights, parameters) and, if ``external``, its external memory's image (:meth:`load_external`).
        ``progress(k)`` is called after each ``k`` words written."""
        self.check(program)
        self.program, self.map = program, AddressMap(program.config)
        self._ext_id = None if program.ext is None else program.ext_id()
        for mem, words in program.images().items():
            self.write_memory(mem, 0, words, progress)
        if external:
            self.load_external(program, progress)

    def image_words(self, program: Program | None = None, *, external: bool = True) -> int:
        """Bus words that :meth:`load` writes for ``program`` (default: the loaded one), the external image's
        included if ``external``."""
        program = program or self.program
        amap = AddressMap(program.config)
        ext = -(-len(program.ext_image()) // 2) if external else 0
        return ext + sum(len(words) * amap.chunks[mem] for mem, words in program.images().items())

    # -- the external memory -----------------------------------------------------------------------------

    def external_id(self) -> int:
        """The identifier of the image in the external memory (``REG_EXT_ID``: 0 for none)."""
        return int(self.bus.read_words(regmap.REG_EXT_ID, 1)[0])

    def load_external(self, program: Program, progress: Callable[[int], None] | None = None, *,
                      force: bool = False, timeout: float = 10.0) -> bool:
        """Write ``program``'s external image (``Program.ext_image``) into the device's external memory
        unless it holds it already (its identifier, ``Program.ext_id``; ``force``: write it anyway); return
        whether it wrote. The words go through the data window in bursts of at most the write FIFO's depth,
        each followed by a wait until they have reached the memory. Afterwards the device's CRC of the words
        it took must equal the host's, and nothing may have been lost (NpuError); only then is the image's
        identifier written beside it."""
        image = program.ext_image()
        if not image:
            return False
        amap = AddressMap(program.config)
        self._wait_for(regmap.REG_EXT_STATUS, regmap.EXT_READY, regmap.EXT_READY, timeout, "the external memory's "
                       "initialisation")
        want = program.ext_id()
        if not force and self.external_id() == want:
            return False
        halves = np.zeros(2 * -(-len(image) // 2), dtype=np.uint32)
        halves[:len(image)] = image
        words = halves[0::2] | halves[1::2] << 16
        self.bus.write_words(regmap.REG_EXT_ADDR, [0])
        burst = min(regmap.EXT_FIFO_DEPTH, amap.ext_window)
        for k in range(0, len(words), burst):
            part = words[k:k + burst]
            self.bus.write_words(amap.ext_window, part)
            self._wait_for(regmap.REG_EXT_STATUS, regmap.EXT_IDLE, regmap.EXT_IDLE, timeout,
                           "the external memory's writes")
            if progress:
                progress(len(part))
        status, crc = (int(v) for v in self.bus.read_words(regmap.REG_EXT_STATUS, 2))
        expected = binascii.crc32(words.astype("<u4").tobytes())
        if status & regmap.EXT_LOST or crc != expected:
            raise NpuError(f"the external memory's image did not arrive whole (CRC 0x{crc:08x}, expected "
                           f"0x{expected:08x}{', words lost' if status & regmap.EXT_LOST else ''})")
        self.bus.write_words(regmap.REG_EXT_ID, [want])
        return True

    def _wait_for(self, addr: int, mask: int, value: int, timeout: float, what: str) -> int:
        """Read register ``addr`` until ``reg & mask == value`` (the transport's own ``wait`` first, if it has
        one); return it. LinkTimeout after ``timeout`` seconds."""
        fast = getattr(self.bus, "wait", None)
        if callable(fast):
            fast(addr, mask, value, self.max_cycles)
        deadline = time.monotonic() + timeout
        while True:
            reg = int(self.bus.read_words(addr, 1)[0])
            if reg & mask == value:
                return reg
            if time.monotonic() > deadline:
                raise LinkTimeout(f"{what} did not end within {timeout} s")

    def write_input(self, x: np.ndarray) -> None:
        """One sample ``x`` into the loaded program's input operand, frame by frame, as ``sim.npu_model.run``
        writes it (each element cut to the bank's element width, lanes past the channels 0)."""
        program, amap = self._loaded(), self._map()
        op = program.operands[program.input_name]
        mem = Mem[op.bank.name]
        lanes = amap.config.lanes
        bits = amap.word_bits[mem] // lanes
        elements = program.input_elements(x)
        for f in range(program.input.frames):
            values = np.asarray(elements[f], dtype=np.int64)
            tokens, channels = values.shape
            groups = -(-channels // lanes)
            padded = np.zeros((tokens, groups * lanes), np.int64)
            padded[:, :channels] = values
            for n in range(tokens):
                words = [pack_lanes(padded[n, g * lanes:(g + 1) * lanes], bits) for g in range(groups)]
                self.write_memory(mem, op.word(f, n, 0), words)

    def _loaded(self) -> Program:
        if self.program is None:
            raise NpuError("no program loaded (NpuDriver.load)")
        return self.program

    # -- running ---------------------------------------------------------------------------------------

    def status(self) -> int:
        """``REG_STATUS``: ``STATUS_BUSY | STATUS_DONE | STATUS_ERROR`` bits."""
        return int(self.bus.read_words(regmap.REG_STATUS, 1)[0])

    def pc(self) -> int:
        """The descriptor running, or where the last run stopped."""
        return int(self.bus.read_words(regmap.REG_PC, 1)[0])

    def cycles(self) -> int:
        """Cycles of the last run."""
        return int(self.bus.read_words(regmap.REG_CYCLES, 1)[0])

    def start(self) -> None:
        """Run the program from descriptor 0 (ignored by the device while it runs). NpuError if the program
        streams weights and the external memory does not hold its image (:meth:`load_external`)."""
        if self._ext_id is not None and (held := self.external_id()) != self._ext_id:
            raise NpuError("the external memory does not hold this program's weights (its image identifier is "
                           f"0x{held:08x}, the program's 0x{self._ext_id:08x}): load them first")
        self.bus.write_words(regmap.REG_CTRL, [regmap.CTRL_START])

    def wait(self, timeout: float = 10.0) -> None:
        """Poll ``REG_STATUS`` until the run is over; NpuError if it stopped with ``error`` (naming the
        descriptor), LinkTimeout after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fast = getattr(self.bus, "wait", None)
        if callable(fast):                                  # the transport polls until not busy
            fast(regmap.REG_STATUS, regmap.STATUS_BUSY, 0, self.max_cycles)
        while True:
            status = self.status()
            if not status & regmap.STATUS_BUSY and status & (regmap.STATUS_DONE | regmap.STATUS_ERROR):
                break
            if time.monotonic() > deadline:
                raise LinkTimeout(f"the overlay is still running after {timeout} s (descriptor {self.pc()})")
        if status & regmap.STATUS_ERROR:
            pc = self.pc()
            name = ""
            if self.program is not None and pc < len(self.program.descriptors):
                d = self.program.descriptors[pc]
                name = f" ({d.name}, {d.kind.name})"
            raise NpuError(f"the overlay stopped at descriptor {pc}{name}: its gateware cannot run it")

    def logits(self) -> np.ndarray:
        """The loaded program's ``classes`` logits of the last run (int64)."""
        program, amap = self._loaded(), self._map()
        bits = amap.word_bits[Mem.LOGITS]
        words = self.read_memory(Mem.LOGITS, 0, program.classes)
        return np.array([unpack_lanes(w, 1, bits, True)[0] for w in words], dtype=np.int64)

    def infer(self, x: np.ndarray, *, timeout: float = 10.0) -> tuple[np.ndarray, int]:
        """Write one sample, run the loaded program, and return ``(logits, cycles)``."""
        self.write_input(x)
        self.start()
        self.wait(timeout)
        return self.logits(), self.cycles()
