"""bench.overlay_fmax: its configuration, its reading of nextpnr's critical path, its refusals (the
synthesis itself runs in tests/test_overlay_build.py's real build and by hand, minutes per seed)."""

from __future__ import annotations

import pytest

from bench import overlay_fmax
from compiler.hw.overlay_config import WIDTHS

LOG = """Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source core.gi_TRELLIS_FF_Q_7.Q
Info:                          Defined in:
Info:                               /work/main/hdl/npu/overlay.py:177
Info:    routing  1.40  1.92 Net core.gi[5]
Info:                               /work/main/hdl/npu/overlay.py:554
Info:                               /work/main/hdl/npu/overlay.py:177
Info:                               /work/main/.venv/lib/python3.11/site-packages/amaranth/hdl/_ir.py:283
Info: Critical path report for cross-domain path '<async>' -> 'posedge $glbnet$clk':
Info:                               /work/main/hdl/npu/bus.py:12
"""


def test_the_measured_overlay_has_the_standard_widths_and_small_memories():
    config = overlay_fmax.small_config(4)
    assert config.lanes == 4
    assert all(getattr(config, k) == v for k, v in WIDTHS.items())
    assert all(getattr(config, k) == v for k, v in overlay_fmax.SMALL_DEPTHS.items())


def test_the_critical_path_is_read_as_its_hdl_lines_in_order_each_once():
    assert overlay_fmax.critical_lines(LOG) == ["hdl/npu/overlay.py:177", "hdl/npu/overlay.py:554"]


@pytest.mark.parametrize("args, message", [(["--seeds", "1,x"], "--seeds must be integers"),
                                           (["--lanes", "0"], "--lanes must be 1-64"),
                                           (["--board", "nosuch"], "unknown board 'nosuch'"),
                                           (["--board", "ulx3s", "--lanes", "0"], "lanes must be an integer"),
                                           (["--board", "ulx3s", "--bram-budget", "0"], "--bram-budget must be in"),
                                           (["--board", "ulx3s", "--lanes", "16", "--bram-budget", "0.3"], "cannot hold the overlay at 16")])
def test_bad_arguments_are_refused_before_any_tool_runs(args, message, capsys):
    from compiler.hw import overlay_config
    budget = overlay_config.BRAM_BUDGET
    assert overlay_fmax.main(args) == 2
    assert overlay_config.BRAM_BUDGET == budget               # the module's budget is the standard one again
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
