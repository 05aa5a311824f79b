"""Run a compiled program on the overlay in a cocotb bench (Icarus Verilog, or Verilator under cocotb), driven by
the host driver a board gets.

The driver is :class:`compiler.host.npu.NpuDriver`, the same that ``run`` uses over a board's UART and
``simulate`` through the C++ harness; here its bus accesses are the bench's coroutines
(:class:`sim.cocotb_bus.HostBus`), which the driver's blocking code calls through cocotb's ``bridge`` and
``resume``. So an event-driven simulator checks the overlay's Verilog with the very program load and
inference a board sees. :func:`run_program` is the entry point; the cocotb test below is what the runner
executes (``PROGRAM``, ``INPUTS`` and ``RESULT`` name its files). It is a flow, not part of ``sim/``: the
driver (``compiler.host``) and the simulators (``sim``) meet here, as in :mod:`compiler.flows.simulate`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.cocotb_run import run_cocotb

#: Cycles the bench lets one inference run before it gives up (the driver's ``max_cycles``).
MAX_CYCLES = 50_000_000


def run_program(program, x: np.ndarray, build_dir: str | Path, *,
                simulator: str = "icarus") -> tuple[np.ndarray, np.ndarray, int, float]:
    """``program`` (``compiler.hw.program.Program``) loaded into the overlay of its configuration and run on
    every sample of ``x`` -> ``(logits [N, classes] int64, cycles [N] int64, bus cycles simulated in all,
    seconds)``. The simulator's build is ``build_dir/<simulator>`` (one run at a time there; ``clean`` empties
    it), each run's files in a ``run-*`` folder of its own inside."""
    from hdl.npu.bus import OverlayBus

    folder = Path(build_dir).resolve() / simulator
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=folder) as own:        # this run's own files
        files = {"PROGRAM": Path(own) / "program.pickle", "INPUTS": Path(own) / "inputs.npy",
                 "RESULT": Path(own) / "result.npz"}
        files["PROGRAM"].write_bytes(pickle.dumps(program))     # this process's own object, read back by its bench
        np.save(files["INPUTS"], np.asarray(x))
        t0 = time.monotonic()
        run_cocotb(OverlayBus(program.config), toplevel="top", test_module="compiler.flows.cocotb_npu",
                   test_dir=Path(__file__).resolve().parents[2], build_dir=folder,
                   simulator=simulator, extra_env={k: str(v) for k, v in files.items()})
        seconds = time.monotonic() - t0
        with np.load(files["RESULT"]) as result:
            return result["logits"], result["cycles"], int(result["bus_cycles"]), seconds


try:
    import cocotb
    from cocotb.task import bridge, resume
except ImportError:          # imported by run_program's caller, outside cocotb's simulator context
    cocotb = None

if cocotb is not None:
    from sim.cocotb_bus import HostBus

    from ..host.npu import NpuDriver

    class _BlockingBus:
        """:class:`compiler.host.npu.Bus` for the driver's thread: each access runs as the bench's coroutine."""

        def __init__(self, bus: HostBus):
            self._bus = bus

        @resume
        async def write_words(self, addr: int, words) -> None:
            for k, w in enumerate(words):
                await self._bus.write(int(addr) + k, int(w))

        @resume
        async def read_words(self, addr: int, count: int) -> np.ndarray:
            return np.array([await self._bus.read(int(addr) + k) for k in range(count)], dtype=np.uint32)

        @resume
        async def wait(self, addr: int, mask: int, value: int, max_cycles: int) -> None:
            await self._bus.wait(addr, mask, value, max_cycles)

    @cocotb.test()
    async def run_npu_program(dut):
        program = pickle.loads(Path(os.environ["PROGRAM"]).read_bytes())
        x = np.load(os.environ["INPUTS"])
        bus = HostBus(dut)
        await bus.reset()

        @bridge
        def drive():
            driver = NpuDriver(_BlockingBus(bus), max_cycles=MAX_CYCLES)
            driver.check(program)
            driver.load(program)
            return [driver.infer(sample, timeout=float("inf")) for sample in x]

        results = await drive()
        np.savez(os.environ["RESULT"], logits=np.array([r[0] for r in results], dtype=np.int64),
                 cycles=np.array([r[1] for r in results], dtype=np.int64), bus_cycles=np.int64(bus.cycles))
