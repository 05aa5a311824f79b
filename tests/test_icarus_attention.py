"""The attention cores as Verilog under Icarus (cocotb), bit for bit against the golden model.

Icarus is a four-state simulator: an X that Verilator (two-state) and the Amaranth simulator never show fails
these benches (``tests/cocotb_attention.py`` cannot read a payload with X bits as an integer). Icarus, as
cocotb runs it (``-g2012``), first runs an ``always @*`` block that Yosys writes for a conditional
combinational assignment when one of its inputs changes; a RAM read enable that was such a block stayed X
until the first output sweep, and the first step accumulated X (``hdl.attention.ram.Sweep``).

Each case starts with a step whose spikes all fall on address 0, with no no-op events: the accumulators'
read addresses then keep their initial value (word 0) until the sweep, which is where a read port driven
by such a block stays X. The cases reuse the helpers of ``tests/test_hdl_attention.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from hdl.attention import CoSpikeUnit, LinearAttentionUnit
from test_hdl_attention import _cospike_cocotb_case, _linear_cocotb_case, _run_attention_cocotb, _spikes


@pytest.fixture(autouse=True)
def _icarus():
    from sim.cocotb_run import simulator_available
    if not simulator_available("icarus"):
        pytest.skip("Icarus Verilog is not installed")


def _corner(tokens: int, channels: int, levels: int) -> np.ndarray:
    """One spike at address 0, at the top level."""
    x = np.zeros((tokens, channels), np.int64)
    x[0, 0] = levels
    return x


@pytest.mark.parametrize("tokens,channels,heads,levels", [
    (4, 8, 2, 4),        # the Verilator bench's unit: powers of two, no division stages
    (3, 6, 3, 2),        # a division by C = 6; 3 heads: padded word addresses
])
def test_linear_attention_cocotb_icarus(tmp_path, tokens, channels, heads, levels):
    dut = LinearAttentionUnit(tokens, channels, heads, levels, ecp5=False)
    rng = np.random.default_rng(tokens * 10 + channels)
    corner = tuple(_corner(tokens, channels, levels) for _ in "qkv")
    steps = [corner] + [tuple(_spikes(rng, tokens, channels, levels, density) for _ in "qkv")
                        for density in (0.4, 1.0, 0.0, 0.6)]
    case = _linear_cocotb_case(dut, steps, rng)
    for frames in case["frames"].values():         # the corner step: its one spike, no no-op events
        frames[0] = [0 | levels << dut.addr_width | 1 << (dut.addr_width + dut.level_width)]
    _run_attention_cocotb(dut, case, "linear_attention_matches_golden", tmp_path, "icarus")


@pytest.mark.parametrize("tokens,channels,levels,lanes", [
    (4, 8, 4, 1),
    (3, 6, 2, 4),        # a division by C = 6; 2 words of 4 lanes, the last half empty
])
def test_cospike_cocotb_icarus(tmp_path, tokens, channels, levels, lanes):
    dut = CoSpikeUnit(tokens, channels, levels, lanes=lanes, ecp5=False)
    rng = np.random.default_rng(tokens * 10 + channels)
    corner = (_corner(tokens, channels, levels), _corner(tokens, channels, levels))
    steps = [corner] + [tuple(_spikes(rng, tokens, channels, levels, density) for _ in "kv")
                        for density in (0.4, 1.0, 0.0, 0.6)]
    case = _cospike_cocotb_case(dut, steps, rng)
    for frames in case["frames"].values():
        frames[0] = [0 | levels << dut.addr_width | 1 << (dut.addr_width + dut.level_width)]
    _run_attention_cocotb(dut, case, "cospike_matches_golden", tmp_path, "icarus")
