"""The overlay behind the host bus: :class:`OverlayBus` decodes the address map of :mod:`hdl.npu.regmap` onto
the overlay's control, load and peek ports, so that the host driver (``compiler.host.npu``) loads programs,
runs them and reads results over the UART bridge on a board or through the simulators' bus harnesses.

Writes (registered twice, decoded and then acted on: a memory word or a start reaches the overlay two cycles
after the bus write, in order, so a start written after the last word of an image sees it):

* a memory region's chunk that is not the word's last goes to the staging register (at its chunk's place);
* its last chunk drives the load port with the staging register's chunks below it: one word written;
* ``CTRL_START`` pulses the overlay's ``start``;
* with an external memory, the external address, the data window's words (into the write FIFO, each with its
  address) and the image identifier.

With an external memory (``Config.ext_depth`` > 0) the bus also has the memory's user port (the streams of
``hdl.sdram.litedram.SdramController``, its ``ready`` and ``idle``). The host's writes leave the FIFO as two
16-bit writes each; while the FIFO holds any, the overlay's fetch waits for the port (so a program started
after a load reads the image whole), else the fetch has it.

Reads (:data:`hdl.hostbus.READ_LATENCY` = 4): the address is registered with ``re``; the next cycle it is on
the peek port (held until the next read); :data:`hdl.npu.overlay.PEEK_LATENCY` = 2 cycles later the peek
port's word (or a register) is cut to the chunk asked and registered into ``rdata``, which holds it until the
next read. One read at a time (the UART bridge and the simulators' harnesses wait for each answer).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import crc, data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..hostbus import READ_LATENCY, HostBusSignature
from .isa import Config, Mem
from .overlay import EXT_WORD_BITS, PEEK_LATENCY, Overlay, ext_address_bits
from .regmap import (CTRL_START, EXT_FIFO_DEPTH, MAGIC, REG_CONFIG, REG_CTRL, REG_CYCLES, REG_EXT_ADDR,
                     REG_EXT_CRC, REG_EXT_ID, REG_EXT_STATUS, REG_MAGIC, REG_PC, REG_STATUS, AddressMap,
                     config_hash)

__all__ = ["OverlayBus"]


class OverlayBus(wiring.Component):
    """The overlay of ``config`` (:class:`hdl.npu.overlay.Overlay`, with its memories' initial ``images`` if
    given) as a host-bus device.

    Attributes
    ----------
    map : hdl.npu.regmap.AddressMap
        Its address map (the host's is ``AddressMap(config)``: the same).
    overlay : hdl.npu.overlay.Overlay
        The overlay it drives.

    Members
    -------
    bus : In(HostBusSignature(map.addr_width))
        The host bus.
    status : Out(3)
        ``busy``, ``done``, ``error`` (for a board's LEDs, ``boards.top.BoardTop``).
    ext_cmd, ext_wdata, ext_rdata, ext_ready, ext_idle
        With an external memory only: its user port (``hdl.sdram.litedram.SdramController``'s ``cmd``,
        ``wdata``, ``rdata``, ``ready`` and ``idle``, with addresses of
        ``hdl.npu.overlay.ext_address_bits(config)`` bits).
    """

    def __init__(self, config: Config, images: dict | None = None):
        if not isinstance(config, Config):
            raise TypeError(f"config must be an hdl.npu.isa.Config, not {config!r}")
        self.map = AddressMap(config)
        self.overlay = Overlay(config, images)
        ext = {}
        if config.ext_depth:
            ext = {"ext_cmd": Out(stream.Signature(data.StructLayout({"we": 1, "addr": ext_address_bits(config)}))),
                   "ext_wdata": Out(stream.Signature(data.StructLayout({"data": EXT_WORD_BITS,
                                                                         "we": EXT_WORD_BITS // 8}))),
                   "ext_rdata": In(stream.Signature(EXT_WORD_BITS)), "ext_ready": In(1), "ext_idle": In(1)}
        super().__init__({"bus": In(HostBusSignature(self.map.addr_width)), "status": Out(3), **ext})

    @property
    def config(self) -> Config:
        return self.map.config

    def elaborate(self, platform):
        assert READ_LATENCY == 1 + PEEK_LATENCY + 1
        m = Module()
        amap, bus = self.map, self.bus
        m.submodules.overlay = ov = self.overlay
        shift = amap.region_shift
        m.d.comb += self.status.eq(Cat(ov.busy, ov.done, ov.error))

        def word_and_chunk(addr, mem):
            cb = amap.chunk_bits[mem]
            return addr[cb:cb + amap.index_bits], addr[:cb] if cb else Const(0, 1)

        # -- writes: decoded as they are registered (cycle 1), then acted on (cycle 2) ------------------------
        # (the bridge sits by the UART pins, across the die from the overlay: no logic on that route)
        region, offset = bus.addr[shift:], bus.addr[:shift]
        max_chunks = max(amap.chunks.values())
        w_data = Signal(32, reset_less=True)
        w_start, w_load, w_stage = Signal(), Signal(), Signal()          # the access decoded, at cycle 1
        w_mem = Signal(range(len(Mem) + 1), reset_less=True)
        w_word = Signal(amap.index_bits, reset_less=True)
        w_chunk = Signal(range(max(max_chunks, 2)), reset_less=True)
        # with an external memory: its address, a data word and the image id written (decoded at cycle 1)
        w_ext = ({"addr": Signal(name="w_ext_addr"), "data": Signal(name="w_ext_data"), "id": Signal(name="w_ext_id")}
                 if self.config.ext_depth else {})
        m.d.sync += [w_data.eq(bus.wdata), w_start.eq(0), w_load.eq(0), w_stage.eq(0),
                     *(flag.eq(0) for flag in w_ext.values())]
        with m.If(bus.we):
            with m.Switch(region):
                with m.Case(0):
                    m.d.sync += w_start.eq((offset == REG_CTRL) & ((bus.wdata & CTRL_START) != 0))
                    if w_ext:
                        m.d.sync += [w_ext["addr"].eq(offset == REG_EXT_ADDR), w_ext["id"].eq(offset == REG_EXT_ID),
                                     w_ext["data"].eq(offset >= amap.ext_window)]
                for mem in Mem:
                    n = amap.chunks[mem]
                    word, chunk = word_and_chunk(offset, mem)
                    with m.Case(amap.region(mem)):
                        m.d.sync += [w_mem.eq(mem), w_word.eq(word), w_chunk.eq(chunk),
                                     w_load.eq(chunk == n - 1), w_stage.eq(chunk < n - 1)]
        # the word being assembled, and the one written: data registers, no reset (hdl.npu.overlay._data)
        staging = Signal(32 * max(max_chunks - 1, 1), reset_less=True)
        load_data = Signal(len(ov.load_data), reset_less=True)
        m.d.comb += ov.load_data.eq(load_data)
        m.d.sync += [ov.load_en.eq(w_load), ov.start.eq(w_start)]
        with m.If(w_load):
            m.d.sync += [ov.load_mem.eq(w_mem), ov.load_addr.eq(w_word)]
            with m.Switch(w_mem):
                for mem in Mem:
                    n = amap.chunks[mem]
                    with m.Case(mem):
                        m.d.sync += load_data.eq(Cat(staging[:32 * (n - 1)], w_data))
        with m.If(w_stage):
            m.d.sync += staging.word_select(w_chunk, 32).eq(w_data)
        ext_registers = self._external(m, w_data, w_ext["addr"], w_ext["data"], w_ext["id"]) if w_ext else ()

        # -- reads: address (cycle 0) -> peek port (cycle 1) -> its word, chunk or register into rdata (cycle 3)
        raddr = Signal.like(bus.addr, name="raddr")
        re1, re2, re3 = Signal(), Signal(), Signal()
        m.d.sync += [re1.eq(bus.re), re2.eq(re1), re3.eq(re2)]
        with m.If(bus.re):
            m.d.sync += raddr.eq(bus.addr)
        rregion, roffset = raddr[shift:], raddr[:shift]
        answer = Signal(32)
        with m.Switch(rregion):
            with m.Case(0):
                with m.Switch(roffset):
                    for reg, value in ((REG_MAGIC, Const(MAGIC, 32)), (REG_CONFIG, Const(config_hash(self.config), 32)),
                                       (REG_STATUS, Cat(ov.busy, ov.done, ov.error)), (REG_PC, ov.pc),
                                       (REG_CYCLES, ov.cycles), *ext_registers):
                        with m.Case(reg):
                            m.d.comb += answer.eq(value)
            for mem in Mem:
                word, chunk = word_and_chunk(roffset, mem)
                with m.Case(amap.region(mem)):
                    padded = Cat(ov.peek_data[:amap.word_bits[mem]], Const(0, 32 << amap.chunk_bits[mem]))
                    m.d.comb += [ov.peek_mem.eq(mem), ov.peek_addr.eq(word), answer.eq(padded.word_select(chunk, 32))]
        rdata = Signal(32)
        with m.If(re3):
            m.d.sync += rdata.eq(answer)
        m.d.comb += bus.rdata.eq(rdata)
        return m

    def _external(self, m, w_data, w_addr, w_data_en, w_id):
        """The external memory's host side: the address, the FIFO and its writer, the CRC and the identifier,
        from the writes decoded at cycle 1; returns the registers that reads answer, ``(offset, value)``."""
        ov = self.overlay
        bits = ext_address_bits(self.config)
        address, image_id, lost = Signal(bits), Signal(32), Signal()
        m.submodules.ext_fifo = fifo = SyncFIFOBuffered(width=bits + 32, depth=EXT_FIFO_DEPTH)
        m.submodules.ext_crc = check = crc.catalog.CRC32_ISO_HDLC(data_width=32).create()
        take = w_data_en & fifo.w_rdy & ~ov.busy
        m.d.comb += [fifo.w_en.eq(take), fifo.w_data.eq(Cat(address, w_data)),
                     check.start.eq(w_addr), check.valid.eq(take), check.data.eq(w_data)]
        with m.If(w_addr):
            m.d.sync += [address.eq(Cat(Const(0, 1), w_data[1:bits])), image_id.eq(0), lost.eq(0)]
        with m.Elif(take):
            m.d.sync += address.eq(address + 2)
        with m.If(w_data_en & ~take):
            m.d.sync += lost.eq(1)
        with m.If(w_id):
            m.d.sync += image_id.eq(w_data)

        # the writer: the FIFO's word as two writes, low half first; the port is the fetch's only while idle
        high = Signal()
        word_addr, word = fifo.r_data[:bits], fifo.r_data[bits:]
        cmd_taken = self.ext_cmd.valid & self.ext_cmd.ready
        with m.If(fifo.r_rdy):
            m.d.comb += [self.ext_cmd.valid.eq(self.ext_wdata.valid), self.ext_cmd.payload.we.eq(1),
                         self.ext_cmd.payload.addr.eq(word_addr | high),
                         self.ext_wdata.valid.eq(self.ext_ready), self.ext_wdata.payload.we.eq(0b11),
                         self.ext_wdata.payload.data.eq(word.word_select(high, 16)),
                         fifo.r_en.eq(cmd_taken & high)]
            with m.If(cmd_taken):
                m.d.sync += high.eq(~high)
        with m.Else():
            wiring.connect(m, ov.ext_cmd, wiring.flipped(self.ext_cmd))
        wiring.connect(m, wiring.flipped(self.ext_rdata), ov.ext_rdata)
        idle = self.ext_idle & ~fifo.r_rdy
        return ((REG_EXT_ADDR, address), (REG_EXT_STATUS, Cat(self.ext_ready, idle, lost)),
                (REG_EXT_CRC, check.crc), (REG_EXT_ID, image_id))

