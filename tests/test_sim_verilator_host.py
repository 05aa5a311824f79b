"""The C++ Verilator harness: scripts of bus operations run without per-cycle Python, results read back."""

import tomllib
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In

from hdl.hostbus import HostBusSignature
import sim
from sim import uart_sim, verilator_host


class _SumDevice(wiring.Component):
    """Words 0..15: a memory; writing 1 to 0x100 sums it (one word per cycle); 0x101: done; 0x102: sum."""

    bus: In(HostBusSignature(16))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=unsigned(32), depth=16, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        rd_bus = mem.read_port()
        index = Signal(5)
        total = Signal(32)
        busy = Signal()
        done = Signal()
        sel = Signal(2)
        m.d.comb += [wr.addr.eq(self.bus.addr[:4]), wr.data.eq(self.bus.wdata),
                     wr.en.eq(self.bus.we & (self.bus.addr < 16)), rd_bus.addr.eq(self.bus.addr[:4]),
                     rd.addr.eq(index[:4])]
        with m.If(self.bus.re):
            m.d.sync += sel.eq(self.bus.addr[8:] != 0)
            with m.If(self.bus.addr == 0x101):
                m.d.sync += sel.eq(2)
            with m.If(self.bus.addr == 0x102):
                m.d.sync += sel.eq(3)
        with m.Switch(sel):
            with m.Case(0):
                m.d.comb += self.bus.rdata.eq(rd_bus.data)
            with m.Case(2):
                m.d.comb += self.bus.rdata.eq(done)
            with m.Case(3):
                m.d.comb += self.bus.rdata.eq(total)
        with m.If(self.bus.we & (self.bus.addr == 0x100)):
            m.d.sync += [busy.eq(1), done.eq(0), index.eq(0), total.eq(0)]
        with m.If(busy):
            m.d.sync += index.eq(index + 1)
            with m.If(index > 0):
                m.d.sync += total.eq(total + rd.data)
            with m.If(index == 16):
                m.d.sync += [busy.eq(0), done.eq(1)]
        return m


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return verilator_host.build(_SumDevice(), tmp_path_factory.mktemp("verilator"))


def test_script_writes_waits_and_reads(binary, tmp_path):
    rng = np.random.default_rng(0)
    script = verilator_host.Script()
    expected = []
    for _ in range(20):
        words = rng.integers(0, 1 << 20, size=16)
        for a, w in enumerate(words):
            script.write(a, int(w))
        script.write(0x100, 1).wait(0x101, 1, 1, max_cycles=1000).read(0x102).read(5)
        expected += [int(words.sum()), int(words[5])]
    result = verilator_host.run(binary, script, tmp_path)
    assert result.reads.tolist() == expected
    assert result.cycles > 20 * (16 + 16)


def test_wait_timeout_is_an_error(binary, tmp_path):
    script = verilator_host.Script().wait(0x101, 1, 1, max_cycles=50)
    try:
        verilator_host.run(binary, script, tmp_path)
    except RuntimeError as exc:
        assert "timeout" in str(exc)
    else:
        raise AssertionError("a wait that never matches must fail")


def test_harnesses_are_package_data():
    """The C++ harnesses are files of the ``sim`` package (sim/harness/), shipped by pyproject's package-data."""
    host = verilator_host.harness_source("host_bus.cpp")
    assert "#define READ_LATENCY @READ_LATENCY@" in host and "int main(" in host
    assert host == verilator_host._HARNESS
    assert "posix_openpt" in uart_sim._HARNESS and uart_sim._HARNESS == verilator_host.harness_source("uart_pty.cpp")
    root = Path(sim.__file__).parent
    project = tomllib.loads((root.parent / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["sim"]
    shipped = {p.relative_to(root).as_posix() for g in globs for p in root.glob(g)}
    assert {"harness/host_bus.cpp", "harness/uart_pty.cpp"} <= shipped


def test_concurrent_runs_in_one_folder_each_get_their_own_answers(binary, tmp_path):
    """Two simulations at once with the same work folder (two `simulate` commands with the default
    --build-dir) no longer share a script or a reads file."""
    from concurrent.futures import ThreadPoolExecutor

    def job(seed):
        words = np.random.default_rng(seed).integers(0, 1 << 20, size=16)
        script = verilator_host.Script()
        for _ in range(200):
            for a, w in enumerate(words):
                script.write(a, int(w))
            script.write(0x100, 1).wait(0x101, 1, 1, max_cycles=1000).read(0x102)
        return int(words.sum()), verilator_host.run(binary, script, tmp_path).reads.tolist()

    with ThreadPoolExecutor(4) as pool:
        for total, reads in pool.map(job, range(8)):
            assert reads == [total] * 200
    assert list(tmp_path.iterdir()) == []                      # each run's files went with it


def test_concurrent_builds_of_one_design_build_it_once(tmp_path):
    """Two processes (here threads) wanting the same new binary: one builds, the other waits and uses it;
    nothing half-built is left in the cache."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: verilator_host.build(_SumDevice(), tmp_path), range(2)))
    assert paths[0] == paths[1] and paths[0].exists()
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 2 and entries[0].endswith(".lock") is False and entries[1].endswith(".lock")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no private build folder left
