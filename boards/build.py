"""Build a board top into a bitstream: synthesis (Yosys), place and route (nextpnr-ecp5), bitstream (ecppack).

The design files and command lines are Amaranth's own (``platform.prepare``: ``top.il``, ``top.ys``,
``top.lpf`` and ``build_top.json``); this module runs the three commands itself, with the YoWASP tools from
PyPI, so that it can show each step with its elapsed time, stop at a time limit and read nextpnr's report.

Tools
-----
Each tool is, in order: the program named by Amaranth's variable for it (``YOSYS``, ``NEXTPNR_ECP5``,
``ECPPACK``), for native builds; ``yowasp-<tool>`` beside this Python (the project's virtual environment);
``yowasp-<tool>`` on ``PATH``.

What a build writes in ``out_dir``
----------------------------------
``top.il`` (the design), ``top.ys``, ``top.lpf``, ``build_top.sh``/``.json`` (Amaranth's script: the same
commands with the plain tool names), ``top.json`` (netlist), ``top.config``, ``top.bit`` (SRAM/flash
bitstream), ``top.svf``; the logs ``top.rpt`` (Yosys), ``top.tim`` (nextpnr, with "Device utilisation" and
"Max frequency" lines), ``top.report.json`` (nextpnr's report, parsed into :class:`BuildResult`: resources,
Fmax and the core clock's critical path), and the console output of each step, ``synthesis.log``,
``place_and_route.log``, ``bitstream.log``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from amaranth.hdl import Elaboratable

from .errors import BoardError

from .spec import BoardSpec

__all__ = ["HIDE_ARRAY_NAMES", "PLACER_OPTIONS", "STEPS", "Usage", "BuildResult", "Prepared", "prepare", "run_step",
           "read_result", "build", "find_tool", "report_critical_path", "stderr_progress"]

# yosys 0.70's abc9 step asserts when an ArrayLayout element wire ("x.levels[3]") collides with the name yosys
# gives a single bit of "x.levels"; hiding those names after reading the design avoids it (as bench/synth.py).
HIDE_ARRAY_NAMES = "rename -hide w:*[[]*"

#: nextpnr's analytic placer, weighted more to timing than by default (10, 2): on the bundled model at 8
#: lanes and 100 MHz, seed 1, Fmax went from 90.9 to 97.7 MHz; and the router's timing-driven rip-up
#: (``--tmg-ripup``): 90.0 -> 98.7 and 99.1 -> 104.6 MHz on two versions of that design (0.1's generated
#: accelerator; docs/boards.md gives the command).
PLACER_OPTIONS = "--placer-heap-timingweight 40 --placer-heap-critexp 4 --tmg-ripup"

#: The build's steps by the tool that runs them, in order.
STEPS = {"yosys": "synthesis", "nextpnr-ecp5": "place and route", "ecppack": "bitstream"}

#: nextpnr's report names for :data:`boards.spec.RESOURCE_NAMES`.
_CELLS = {"LUT4": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DP16KD": "DP16KD", "MULT18X18D": "MULT18X18D"}

Progress = Callable[[str, float, bool], None]


@dataclass(frozen=True)
class Usage:
    """How many of one resource a build uses, of the device's total."""

    used: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` made and measured.

    Attributes
    ----------
    bitstream : Path
        ``top.bit``.
    fmax_mhz : float
        The highest frequency nextpnr's timing analysis gives the core clock (``sync``) after routing.
    target_mhz : float
        The core clock's constraint (nextpnr derives it from the oscillator through the PLL).
    resources : dict[str, Usage]
        By :data:`boards.spec.RESOURCE_NAMES`: ``LUT4`` is nextpnr's ``TRELLIS_COMB``, the LUT4 sites used
        (logic LUTs, two per ``CCU2C`` carry cell, distributed RAM, and feed-through LUTs that nextpnr adds:
        more than Yosys's LUT4 count), ``FF`` its ``TRELLIS_FF``.
    seconds : dict[str, float]
        The wall time of each step of :data:`STEPS`.
    out_dir : Path
        Where the build wrote its files and logs.
    critical_path : dict or None
        The core clock's critical path from nextpnr's report (:func:`report_critical_path`): ``delay_ns``,
        ``summary``, ``from``, ``to``, ``nets`` and ``defined_in``; None if the report has none.
    """

    bitstream: Path
    fmax_mhz: float
    target_mhz: float
    resources: dict[str, Usage]
    seconds: dict[str, float]
    out_dir: Path
    critical_path: dict | None = None

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.target_mhz


def stderr_progress(step: str, elapsed: float, done: bool) -> None:
    """The default progress report: on a terminal a line per step that counts seconds, else one line when
    each step ends."""
    if sys.stderr.isatty():
        print(f"\r{step}: {elapsed:.0f} s" if not done else f"\r{step}: done in {elapsed:.1f} s",
              end="\n" if done else "", file=sys.stderr, flush=True)
    elif done:
        print(f"{step}: done in {elapsed:.1f} s", file=sys.stderr, flush=True)


def find_tool(name: str) -> str:
    """The program to run for ``yosys``, ``nextpnr-ecp5`` or ``ecppack`` (see the module's documentation)."""
    override = os.environ.get(name.upper().replace("-", "_"))
    if override:
        return override
    yowasp = f"yowasp-{name}"
    beside = Path(sys.executable).parent / yowasp
    if beside.exists():
        return str(beside)
    found = shutil.which(yowasp)
    if found is None:
        raise BoardError(f"{yowasp} not found: install it with pip (the project's dependencies include it) "
                        f"or set {name.upper().replace('-', '_')} to a native {name}")
    return found


def _stop_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process of its session (it was started with ``start_new_session``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _first_error(text: str) -> str:
    """The first line that reports an error, else the last non-empty line, of a tool's output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def _run(argv: list[str], step: str, out_dir: Path, log: Path, full_log: Path | None, deadline: float | None,
         progress: Progress | None) -> float:
    """Run one step in ``out_dir``, its console output into ``log``; return its wall time."""
    start = time.monotonic()
    if progress:
        progress(step, 0.0, False)
    program = find_tool(argv[0])
    with open(log, "w") as out:
        try:        # a session of its own: the tool and its children are stopped together (Ctrl-C included)
            proc = subprocess.Popen([program, *argv[1:]], cwd=out_dir, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as e:
            raise BoardError(f"{step}: cannot run {program}: {e.strerror}") from None
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if deadline is not None and time.monotonic() > deadline:
                        raise BoardError(f"{step} did not finish within the build's time limit (log: {log})") \
                            from None
                    if progress:
                        progress(step, time.monotonic() - start, False)
        except BaseException:
            _stop_tree(proc)
            raise
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        if full_log is not None and full_log.exists():
            text += full_log.read_text(errors="replace")
        logs = f"{log} and {full_log}" if full_log is not None else str(log)
        raise BoardError(f"{step} failed ({argv[0]} exit status {proc.returncode}): {_first_error(text)} "
                        f"(logs: {logs})")
    if progress:
        progress(step, elapsed, True)
    return elapsed


def _read_report(path: Path, spec: BoardSpec, netlist: Path | None = None
                 ) -> tuple[float, float, dict[str, Usage], dict | None]:
    """``(fmax, target, resources, critical path)`` of the core clock from nextpnr's ``--report`` file (and,
    for a report without source locations, the synthesized ``netlist``)."""
    report = json.loads(path.read_text())
    util = report.get("utilization", {})
    resources = {name: Usage(int(util.get(cell, {}).get("used", 0)),
                             int(util.get(cell, {}).get("available", spec.totals[name])))
                 for name, cell in _CELLS.items()}
    clocks = report.get("fmax", {})
    # Amaranth names the sync domain's clock net "clk"; nextpnr reports the global net driving it
    sync = [net for net in clocks if net.removeprefix("$glbnet$") == "clk"]
    if len(sync) != 1:
        raise BoardError(f"nextpnr's report has no single core clock among {sorted(clocks)} ({path})")
    clock = clocks[sync[0]]
    return (float(clock["achieved"]), float(clock["constraint"]), resources,
            report_critical_path(report, sync[0], netlist))


def report_critical_path(report: dict, clock: str, netlist: str | Path | None = None) -> dict | None:
    """The critical path of ``clock`` (a name of the report's ``fmax``, e.g. ``$glbnet$clk``) to itself, from
    nextpnr's ``--report`` JSON (``report``, parsed), or None if the report has none.

    nextpnr's ``critical_paths`` holds one entry per clock (``{"from": "posedge $glbnet$clk", "to": ...,
    "path": [segment, ...]}``, then the cross-domain ones); a segment is ``{"type", "delay", "from": {"cell",
    "port", "loc"}, "to": {...}}``, and a ``routing`` one adds ``net`` and the net's ``sources`` (its ``src``
    attribute split at ``|``, when the nextpnr writes them: the pinned one does). The result:

    - ``delay_ns``: the segments' summed delay (to the picosecond, nextpnr's unit for the ECP5), and
      ``summary``: ``"x ns logic, y ns routing"`` (routing: the ``routing`` segments; logic: the others), as
      nextpnr's log prints it;
    - ``from``, ``to``: ``cell.port`` of the path's start (the launching flip-flop's output) and end (the
      capturing one's input);
    - ``nets``: the routed nets in order (up to 40);
    - ``defined_in``: the distinct source locations of this project's ``hdl/`` package among those nets'
      sources (up to 20), as ``hdl/<file>:<line>``. A report without ``sources`` takes them from the ``src``
      attributes of the nets' wires in the synthesized ``netlist`` (Yosys's JSON, ``top.json``), if given.
    """
    entries = [e for e in report.get("critical_paths", [])
               if e.get("from") == f"posedge {clock}" and e.get("to") == f"posedge {clock}" and e.get("path")]
    if not entries:
        return None
    path = entries[0]["path"]
    routed = [seg for seg in path if seg.get("type") == "routing"]
    total = sum(float(seg["delay"]) for seg in path)
    routing = sum(float(seg["delay"]) for seg in routed)
    wires = None
    where: list[str] = []
    for seg in routed:
        if "sources" in seg:
            sources = seg["sources"]
        else:
            if wires is None:
                wires = _netlist_wires(netlist)
            net = seg["net"]
            src = wires.get(net, wires.get(re.sub(r"\[\d+\]$", "", net), ""))
            sources = src.split("|") if src else []
        for src in sources:
            here = _hdl_location(src)
            if here is not None and here not in where:
                where.append(here)

    def pin(end: dict) -> str:
        return f"{end['cell']}.{end['port']}"

    return {"delay_ns": round(total, 3), "summary": f"{total - routing:.2f} ns logic, {routing:.2f} ns routing",
            "from": pin(path[0]["from"]), "to": pin(path[-1]["to"]), "nets": [seg["net"] for seg in routed][:40],
            "defined_in": where[:20]}


def _hdl_location(src: str) -> str | None:
    """``hdl/<file>:<line>`` of a source location in this project's ``hdl/`` package (not Amaranth's
    ``amaranth/hdl/``), else None."""
    head, sep, rest = ("/" + src.replace("\\", "/")).rpartition("/hdl/")
    if not sep or head.endswith("/amaranth"):
        return None
    return "hdl/" + rest


def _netlist_wires(netlist: str | Path | None) -> dict[str, str]:
    """The ``src`` attribute of each wire of the top module of Yosys's JSON netlist; {} without one."""
    if netlist is None or not Path(netlist).exists():
        return {}
    modules = json.loads(Path(netlist).read_text()).get("modules", {})
    top = next((m for m in modules.values() if int(str(m.get("attributes", {}).get("top", "0")), 2)), None)
    if top is None:
        return {}
    return {name: wire.get("attributes", {}).get("src", "") for name, wire in top.get("netnames", {}).items()}


def _write_files(plan, out_dir: Path) -> None:
    """Write the build plan's files into ``out_dir``, as ``plan.extract`` would but without its
    ``os.chdir``: the process's working folder is shared with threads (the build's simulation runs beside it)."""
    for filename, content in plan.files.items():
        path = out_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


@dataclass(frozen=True)
class Prepared:
    """A design written out for the tools (:func:`prepare`): each step's command line, in order.

    Attributes
    ----------
    spec : BoardSpec
    out_dir : Path
        The design's files, the tools' outputs and every log.
    name : str
        The design's name (``<name>.il``, ``<name>.json``, ``<name>.bit``...).
    commands : dict[str, list[str]]
        Per step of :data:`STEPS` (``synthesis``, ``place and route``, ``bitstream``), Amaranth's command line.
    """

    spec: BoardSpec
    out_dir: Path
    name: str
    commands: dict[str, list[str]]

    @property
    def report(self) -> Path:
        """nextpnr's JSON report."""
        return self.out_dir / f"{self.name}.report.json"

    def logs(self, step: str) -> tuple[Path, Path | None]:
        """``(console log, the tool's own log or None)`` of ``step``."""
        tool = self.commands[step][0]
        full = {"yosys": f"{self.name}.rpt", "nextpnr-ecp5": f"{self.name}.tim"}.get(tool)
        return self.out_dir / f"{step.replace(' ', '_')}.log", (self.out_dir / full if full else None)


def prepare(top: Elaboratable, spec: BoardSpec, out_dir: str | Path, *, name: str = "top", seed: int = 1,
            router: str = "router2", nextpnr_opts: str = PLACER_OPTIONS) -> Prepared:
    """Elaborate ``top`` for board ``spec`` and write the design and the tools' scripts into ``out_dir``.

    ``seed``: nextpnr's placement seed; ``router``: nextpnr's router (``router2``, the default, routed the
    16-lane bundled model in under 3 minutes where ``router1``, nextpnr's own default, had not finished
    after 75); ``nextpnr_opts``: more placer and router options."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = spec.platform().prepare(top, name=name, script_after_read=HIDE_ARRAY_NAMES,
                                   nextpnr_opts=f"--seed {seed} --router {router} --report {name}.report.json "
                                                f"--timing-allow-fail {nextpnr_opts}".strip())
    _write_files(plan, out_dir)
    commands = {}
    for argv in json.loads(plan.files[f"build_{name}.json"])["commands"]:
        step = STEPS.get(argv[0])
        if step is None:
            raise ValueError(f"the {spec.name} platform runs {argv[0]!r}, which this flow does not know")
        commands[step] = argv
    return Prepared(spec, out_dir, name, commands)


def run_step(prepared: Prepared, step: str, *, progress: Progress | None = stderr_progress,
             deadline: float | None = None) -> float:
    """Run one step of :data:`STEPS` on a prepared design; return its wall time in seconds.

    ``progress(step, elapsed_s, done)`` is called at its start, about once a second and at its end;
    ``deadline`` (``time.monotonic()``) stops the tool. BoardError if the tool is missing or fails, or the
    deadline passes."""
    log, full_log = prepared.logs(step)
    return _run(prepared.commands[step], step, prepared.out_dir, log, full_log, deadline, progress)


def read_result(prepared: Prepared, seconds: dict[str, float], *,
                allow_timing_fail: bool = False) -> BuildResult:
    """What place and route achieved (nextpnr's report); BoardError if the core clock misses its target,
    unless ``allow_timing_fail``."""
    fmax, target, resources, path = _read_report(prepared.report, prepared.spec,
                                                 prepared.out_dir / f"{prepared.name}.json")
    if fmax < target and not allow_timing_fail:
        raise BoardError(f"timing not met: the core clock reaches {fmax:.1f} MHz, below its "
                         f"{target:.1f} MHz target; choose a lower clock (log: {prepared.logs('place and route')[1]})")
    return BuildResult(bitstream=prepared.out_dir / f"{prepared.name}.bit", fmax_mhz=fmax, target_mhz=target,
                       resources=resources, seconds=dict(seconds), out_dir=prepared.out_dir, critical_path=path)


def build(top: Elaboratable, spec: BoardSpec, out_dir: str | Path, *, name: str = "top",
          progress: Progress | None = stderr_progress, seed: int = 1, timeout: float | None = None,
          allow_timing_fail: bool = False, router: str = "router2",
          nextpnr_opts: str = PLACER_OPTIONS) -> BuildResult:
    """Synthesize, place and route ``top`` for board ``spec`` and write its bitstream into ``out_dir``.

    Parameters
    ----------
    top : Elaboratable
        The design, normally a :class:`boards.top.BoardTop`; it must make the ``sync`` domain.
    spec : BoardSpec
        The board.
    out_dir : str or Path
        Created if needed; every file and log goes there.
    name : str
        The design's name (file names ``<name>.bit`` etc.).
    progress : callable or None
        ``progress(step, elapsed_s, done)``: at the start of each step, about once a second while it runs
        and at its end. The default is :func:`stderr_progress`; None reports nothing.
    seed : int
        nextpnr's placement seed.
    router : str
        nextpnr's router: ``router2`` (default) routed the 16-lane bundled model in under 3 minutes where
        ``router1`` had not finished after 75; ``router1`` is nextpnr's own default.
    timeout : float or None
        Seconds for the whole build; past them the running tool is stopped.
    allow_timing_fail : bool
        Write the bitstream even if the core clock misses its target.

    Raises
    ------
    BoardError
        A tool is missing or fails (the message names the step and its logs), the time limit passes, or the
        core clock misses its target (unless ``allow_timing_fail``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    prepared = prepare(top, spec, out_dir, name=name, seed=seed, router=router, nextpnr_opts=nextpnr_opts)
    seconds: dict[str, float] = {}
    result = None
    for step in prepared.commands:
        seconds[step] = run_step(prepared, step, progress=progress, deadline=deadline)
        if step == "place and route":       # refuse a missed clock before the bitstream
            result = read_result(prepared, seconds, allow_timing_fail=allow_timing_fail)
    return replace(result, seconds=seconds)
