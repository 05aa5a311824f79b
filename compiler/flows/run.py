"""``python -m compiler run``: classify inputs on a board over its UART and check every answer against the
golden model; and ``python -m compiler flash``.

``run`` talks to the overlay through :func:`compiler.host.link.open_port` (pyserial for a board's port such as
/dev/ttyUSB0, ``--port auto`` finding it by its USB id; termios for the pty of a simulated board, :mod:`sim.uart_sim`,
which ``--simulated`` starts), :class:`compiler.host.link.Link` and :class:`compiler.host.npu.NpuDriver`. It
first checks that the board runs the overlay and which configuration, loads the model's program and weights
(CRC-checked), then, per input, loads the pixels, starts the program, waits for it and reads the logits and
the cycle counter. Classes **and** logits must equal the integer golden model's: any difference is a failed
check (exit status 1).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from boards import get_board
from boards.flash import find_openfpgaloader, flash, flash_command

from hdl.npu import regmap as npu_regmap
from hdl.npu.regmap import config_hash

from ..errors import UserError
from ..host.link import Link, LinkError, SerialPort, find_board_port, open_port
from ..host.npu import NpuDriver, NpuError
from ..hw.program import compile_program, model_id, total_events
from ..ir import golden, metrics
from . import overlay as overlay_flow


# ---------------------------------------------------------------- the build a board runs

#: What ``flash`` and ``run`` read of a build report, and the type each must have.
_REPORT_FIELDS = {"model_id": str, "board": str, "bitstream": str, "clock_mhz": (int, float)}


def read_build_report(path: Path) -> dict:
    """A ``report.json`` written by ``build``, checked before use: a JSON object whose fields that ``flash``
    and ``run`` read have their types, and whose bitstream is a plain file name (in the report's folder)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable build report ({exc})") from None
    if not isinstance(report, dict):
        raise UserError(f"{path}: not a build report (a JSON object), but {type(report).__name__}")
    for key, kind in _REPORT_FIELDS.items():
        if key in report and (not isinstance(report[key], kind) or isinstance(report[key], bool)):
            raise UserError(f"{path}: {key!r} must be {getattr(kind, '__name__', 'a number')}, not "
                            f"{report[key]!r}")
    clock = report.get("clock_mhz")
    if clock is not None and not 0 < clock < float("inf"):
        raise UserError(f"{path}: 'clock_mhz' must be a positive frequency, not {clock!r}")
    bit = report.get("bitstream")
    if bit is not None and (Path(bit).name != bit or bit in (".", "..") or not bit.endswith(".bit")):
        raise UserError(f"{path}: the bitstream must be a .bit file in the build's folder, not {bit!r}")
    return report


# ---------------------------------------------------------------- run

def _open(port: str, baud: int, timeout: float):
    try:
        return open_port(port, baud, timeout=timeout)
    except ValueError as exc:
        raise UserError(f"--baud: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot open {port}: {exc.strerror or exc}; is the board plugged in (ls /dev/ttyUSB*)?") \
            from None


def run_inputs(args) -> tuple[dict, int]:
    """The ``run`` command: returns ``(report, exit status)``."""
    from ..frontend import checkpoint                # deferred: torch takes seconds to import
    from .lower import lower
    from .samples import load_samples

    if not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    model = checkpoint.load(args.model)
    x, y, source = load_samples(model, inputs=args.inputs, labels=args.labels, dataset=args.dataset,
                                split=args.split, count=args.count)
    graph = lower(model, args.model)
    if args.build is not None:                      # checked before the board is: bad input fails first
        find_overlay_build(args.model, model_id(graph), args.build)
    port = _open(args.port, args.baud, args.timeout)
    try:
        link = Link(port, timeout=args.timeout, retries=2)
        try:
            link.ping()
            magic = int(link.read_words(npu_regmap.REG_MAGIC, 1)[0])
        except LinkError as exc:
            raise UserError(f"no answer from an accelerator on {args.port} at {args.baud} baud ({exc}); is the "
                            f"bitstream loaded (python -m compiler flash) and the baud rate the build's?") from None
        if magic != npu_regmap.MAGIC:
            raise UserError(f"the board on {args.port} does not run the overlay (it answers {magic:08x}, not "
                            f"{npu_regmap.MAGIC:08x}): build a bitstream (python -m compiler build) and flash it")
        return run_on_overlay(args, graph, x, y, source, link)
    finally:
        port.close()


# ---------------------------------------------------------------- run against the simulated board

#: The simulated board's clock: 16 cycles per UART bit at 3 Mbaud (the harness's fastest line rate).
SIM_CLOCK_MHZ = 48.0
#: The board whose standard overlay configuration ``run --simulated`` runs without an overlay build.
SIM_OVERLAY_BOARD = "ulx3s"


def check_options(args) -> None:
    """UserError (before any work) for ``run`` options that do not go together: ``--port`` or ``--simulated``
    (one of them), ``--build-dir`` only with ``--simulated``, a baud rate the simulated board's
    clock cannot make; ``--port auto`` replaced by the board's port (:func:`find_board_port`)."""
    from hdl.uart import divisor

    if args.simulated and args.port is not None:
        raise UserError("give either --port (a board) or --simulated (the Verilated board), not both")
    if not args.simulated:
        if args.port == "auto":                     # the one board plugged in, by its USB bridge's id
            try:
                args.port = find_board_port()
            except LookupError as exc:
                raise UserError(str(exc)) from None
        if args.port is None:
            raise UserError("--port is needed: the board's serial port (/dev/ttyUSB0, or auto), or --simulated to "
                            "run against the simulated board")
        if args.build_dir is not None:
            raise UserError("--build-dir is for --simulated")
        return
    try:
        divisor(SIM_CLOCK_MHZ * 1e6, args.baud)
    except ValueError as exc:
        raise UserError(f"--baud {args.baud}: the simulated board runs at {SIM_CLOCK_MHZ:g} MHz: {exc}") from None


def run_simulated(args) -> tuple[dict, int]:
    """``run --simulated``: start the simulated board -- the Verilated gateware a board gets (the UART bridge and
    the overlay of the overlay build's configuration, else the ULX3S-85F's standard one) behind a pty
    (:mod:`sim.uart_sim`) -- and run :func:`run_inputs` against it."""
    from hdl.npu.bus import OverlayBus
    from sim import npu_sdram
    from sim.uart_sim import UartBoard, build as build_board, simulated_board

    from ..frontend import checkpoint
    from .lower import lower
    from .simulate import BuildClock, check_build_dir

    build_dir = args.build_dir or "build/sim"
    check_build_dir(build_dir)
    graph = lower(checkpoint.load(args.model), args.model)
    sources = rate = None
    report, path = find_overlay_build(args.model, model_id(graph), args.build)
    program = None
    if report is not None:
        config = overlay_flow._config_from((report.get("overlay") or {}).get("config"), path)
        source = f"the overlay build {path.parent}"
    else:
        spec = get_board(SIM_OVERLAY_BOARD)
        program, standard_error = overlay_flow.board_program(graph, spec)
        config = program.config
        source = f"the {spec.name}'s {'standard ' if standard_error is None else 'SDRAM-streaming '}overlay"
    what = (f"overlay, {config.lanes} lanes, configuration {config_hash(config):08x} ({source}"
            f"{'; weights in SDRAM: LiteDRAM on a model of the chip' if config.ext_depth else ''})")
    if config.ext_depth:                        # the board's SDRAM too: its controller and a model of the chip
        top = None
        # the chip's model stores the rows that this model's weights take
        program = program or compile_program(graph, config)
        sources, key, rate = npu_sdram.uart_board(config, SIM_CLOCK_MHZ * 1e6, args.baud,
                                                  words=len(program.ext_image()))
    else:
        top = UartBoard(OverlayBus(config), SIM_CLOCK_MHZ * 1e6, args.baud)
        key = ("UartBoard", ("OverlayBus", config), SIM_CLOCK_MHZ, args.baud)
    with BuildClock(f"the simulated board ({what})", sys.stderr.isatty() or args.progress) as clock:
        build_board(top, build_dir, key=key, progress=clock, sources=sources)
    if args.clock is None:
        args.clock = SIM_CLOCK_MHZ
    with simulated_board(top, build_dir, key=key, sources=sources, divisor=rate) as board:
        # held open between the driver's own opens, as a terminal holds a board's port
        with SerialPort(board.path, timeout=args.timeout):
            args.port = board.path
            report, status = run_inputs(args)
    report["simulated"] = {"design": "overlay", "what": what,
                           "clock_mhz": SIM_CLOCK_MHZ, **(board.stats or {})}
    return report, status


# ---------------------------------------------------------------- run on the overlay

def find_overlay_build(model_path: str, model_id: int, build: str | None) -> tuple[dict | None, Path | None]:
    """The ``report.json`` of the overlay build to run: ``build`` (a folder or the file; it must be an overlay
    build of this model), else the newest ``build/<model stem>-*/report.json`` of an overlay build with the same
    model id. ``(report, path)`` or ``(None, None)``."""
    if build is not None:
        path = Path(build)
        if path.is_dir():
            path = path / "report.json"
        if not path.is_file():
            raise UserError(f"{path}: no such build report")
        report = read_build_report(path)
        if report.get("model_id") != f"{model_id:08x}":
            raise UserError(f"{path} is the build of model id {report.get('model_id')}, not {model_id:08x} "
                            f"({model_path})")
        if report.get("kind") != "overlay":
            raise UserError(f"{path} is not an overlay build (a generator's, from 0.1): rebuild it (python -m "
                            "compiler build)")
        return report, path
    candidates = []
    for path in Path("build").glob(f"{Path(model_path).stem}-*/report.json"):
        try:
            report = read_build_report(path)
        except UserError:
            continue
        if report.get("kind") == "overlay" and report.get("model_id") == f"{model_id:08x}":
            candidates.append((path.stat().st_mtime, str(path), report))
    if not candidates:
        return None, None
    _, path, report = max(candidates)
    return report, Path(path)


def _overlay_program(args, graph, device_hash: int):
    """``(program, build report or None, where the configuration came from)`` for the overlay on the board:
    the overlay build's configuration and images (checked against this model's compilation), else the board
    standard configuration whose hash the device answers."""
    mid = model_id(graph)
    report, path = find_overlay_build(args.model, mid, args.build)
    images = None
    if report is not None:
        ov = report.get("overlay")
        if not isinstance(ov, dict):
            raise UserError(f"{path}: an overlay build report without its 'overlay' object")
        config = overlay_flow._config_from(ov.get("config"), path)
        if ov.get("config_hash") != f"{config_hash(config):08x}":
            raise UserError(f"{path}: its configuration hash {ov.get('config_hash')!r} is not its configuration's "
                            f"({config_hash(config):08x})")
        name = report.get("images", overlay_flow.IMAGES_FILE)
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            raise UserError(f"{path}: the images must be an .npz file in the build's folder, not {name!r}")
        meta, images = overlay_flow.load_images(path.parent / name)
        if meta["model_id"] != mid:
            raise UserError(f"{path.parent / name} holds the program of model id {meta['model_id']:08x}, not "
                            f"{mid:08x} ({args.model})")
        if meta["config"] != config:
            raise UserError(f"{path.parent / name} was compiled for configuration {meta['config_hash']:08x}, "
                            f"its report says {config_hash(config):08x}")
        source = str(path.parent)
        if config_hash(config) != device_hash:
            raise UserError(f"the board on {args.port} runs the overlay of configuration {device_hash:08x}, not "
                            f"{config_hash(config):08x} of the build {path.parent}: flash that build's bitstream")
    else:
        found = overlay_flow.standard_config_for_hash(device_hash)
        if found is None:
            raise UserError(f"the board on {args.port} runs an overlay of configuration {device_hash:08x}, which is "
                            f"no board's standard configuration; give --build DIR, the overlay build it runs")
        names, config = found
        source = f"the {'SDRAM-streaming' if config.ext_depth else 'standard'} overlay of the {', '.join(names)}"
    try:
        program = compile_program(graph, config)
    except UserError as exc:
        raise UserError(f"the overlay on {args.port} (configuration {config_hash(config):08x}): {exc}") from None
    if images is not None and images != program.images():
        raise UserError(f"the images in {path.parent} are not this model's program for configuration "
                        f"{config_hash(config):08x}: rebuild it (python -m compiler build)")
    return program, report, source


def run_on_overlay(args, graph, x, y, source, link) -> tuple[dict, int]:
    """``run`` on a board that runs the overlay: its configuration checked, the program and weights loaded
    (``compiler.host.npu.NpuDriver.load``, CRC-checked frames, a progress bar on a terminal), every input
    classified; logits against the golden model, cycles against the descriptors' formula."""
    driver = NpuDriver(link)
    try:
        device_hash = driver.device_config()
    except LinkError as exc:
        raise UserError(f"the link to {args.port} failed: {exc}") from None
    program, build_report, config_from = _overlay_program(args, graph, device_hash)
    clock = args.clock if args.clock is not None else (build_report or {}).get("clock_mhz")
    words = driver.image_words(program)
    bar = tqdm(total=words, desc="load", unit="word", leave=False, disable=None, file=sys.stderr)
    t0 = time.monotonic()
    try:
        driver.load(program, progress=bar.update)
    except LinkError as exc:
        raise UserError(f"the link to {args.port} failed while loading the program: {exc}") from None
    finally:
        bar.close()
    load_seconds = time.monotonic() - t0
    ref = golden.run(graph, x)[0]
    logits = np.zeros((len(x), program.classes), dtype=np.int64)
    cycles = np.zeros(len(x), dtype=np.int64)
    bar = tqdm(total=len(x), desc="run", unit="inference", leave=False, disable=None, file=sys.stderr)
    t0 = time.monotonic()
    i = 0
    try:
        for i, sample in enumerate(x):
            logits[i], cycles[i] = driver.infer(sample, timeout=max(10.0, args.timeout))
            bar.update(1)
    except LinkError as exc:
        raise UserError(f"the link to {args.port} failed at input {i}: {exc}") from None
    except NpuError as exc:
        raise UserError(f"the overlay on {args.port} failed at input {i}: {exc}") from None
    finally:
        bar.close()
    wall = time.monotonic() - t0

    shown = min(len(x), 100)
    events = [program.events(x[b:b + 1]) for b in range(len(x))]
    modelled = np.array([sum(program.cycles(e)) for e in events])
    synops = [metrics.summarize(graph, x[b:b + 1], 0)["synaptic_ops"]["effective"] for b in range(shown)]
    mean_synops = metrics.summarize(graph, x, 0)["synaptic_ops"]["effective"]
    classes, ref_classes = logits.argmax(1), ref.argmax(1)
    class_bad = np.flatnonzero(classes != ref_classes)
    logit_bad = np.flatnonzero((logits != ref).any(axis=1))
    first = None
    if len(logit_bad):
        b = int(logit_bad[0])
        k = int(np.flatnonzero(logits[b] != ref[b])[0])
        first = {"sample": b, "tensor": graph.output, "position": [k], "hardware": int(logits[b, k]),
                 "golden": int(ref[b, k])}
    cyc = cycles.astype(float)
    report = {
        "kind": "overlay",
        "model": str(args.model),
        "model_id": f"{program.model_id:08x}",
        "port": args.port,
        "baud": args.baud,
        "config_hash": f"{config_hash(program.config):08x}",
        "config_from": config_from,
        "lanes": program.config.lanes,
        "image_words": words,
        "load_seconds": load_seconds,
        "samples_from": source,
        "samples": int(len(x)),
        "accuracy": float((classes == y).mean()) if y is not None else None,
        "integer_accuracy": float((ref_classes == y).mean()) if y is not None else None,
        "class_agreement": float((classes == ref_classes).mean()),
        "logits_equal": int(len(x) - len(logit_bad)),
        "mismatched_samples": [int(i) for i in logit_bad[:20]],
        "class_mismatches": int(len(class_bad)),
        "first_mismatch": first,
        "classes": [int(c) for c in classes[:20]],
        "cycles_per_inference": float(cyc.mean()),
        "cycles_min": int(cycles.min()),
        "cycles_max": int(cycles.max()),
        "cycles_modelled_per_inference": float(modelled.mean()),
        "cycle_model_error": int(np.abs(modelled - cycles).max()),
        "spike_events_per_inference": float(np.mean([total_events(e) for e in events])),
        "synaptic_ops_per_inference": float(mean_synops),
        "counters_from": "the golden model (the overlay counts cycles; events and synaptic operations are the "
                         "golden model's)",
        "clock_mhz": clock,
        "clock_from": ("--clock" if args.clock is not None else (config_from if build_report else None)),
        "latency_us": float(cyc.mean() / clock) if clock else None,
        "host_seconds_per_inference": wall / len(x),
        "per_inference": [{"class": int(classes[b]), "golden_class": int(ref_classes[b]), "cycles": int(cycles[b]),
                           "events": int(round(total_events(events[b]))), "synops": int(round(synops[b]))}
                          for b in range(shown)],
    }
    return report, (0 if len(logit_bad) == 0 else 1)


def print_run(r: dict) -> None:
    ok = r["logits_equal"] == r["samples"]
    acc = (lambda v: "n/a (no labels)" if v is None else f"{v:.2%}")
    print(f"{r['model']} (model id {r['model_id']}) on {r['port']}: {r['samples']} inputs from {r['samples_from']}")
    if r.get("simulated"):
        sim = r["simulated"]
        done = (f"; {sim['cycles']:,} cycles simulated in {sim['seconds']:.1f} s" if "cycles" in sim else "")
        print(f"  simulated board:         the Verilated {sim['what']} at {sim['clock_mhz']:g} MHz behind a pty{done}")
    if r.get("kind") == "overlay":
        print(f"  overlay:                 configuration {r['config_hash']} ({r['config_from']}), {r['lanes']} lanes; "
              f"program and weights loaded: {r['image_words']:,} words in {r['load_seconds']:.1f} s")
    print(f"  board accuracy:          {acc(r['accuracy'])} (golden model: {acc(r['integer_accuracy'])})")
    print(f"  agreement with golden:   classes {r['class_agreement']:.2%}, logits "
          f"{r['logits_equal']}/{r['samples']} identical" + ("" if ok else " (MISMATCH)"))
    if r["first_mismatch"]:
        f = r["first_mismatch"]
        print(f"  first difference:        input {f['sample']}, logit {f['position'][0]}: board "
              f"{f['hardware']}, golden {f['golden']}")
    lat = (f", {r['latency_us']:.2f} us at {r['clock_mhz']:g} MHz" if r["latency_us"] is not None
           else " (latency: clock unknown, give --build DIR or --clock MHZ)")
    print(f"  cycles per inference:    {r['cycles_per_inference']:,.0f} (min {r['cycles_min']:,}, max "
          f"{r['cycles_max']:,}){lat}")
    if r.get("kind") == "overlay":
        print(f"  cycle formula:           {r['cycles_modelled_per_inference']:,.0f} per inference (largest "
              f"difference from the board's counter: {r['cycle_model_error']:,} cycles)")
    print(f"  spike events, syn. ops:  {r['spike_events_per_inference']:,.0f}, {r['synaptic_ops_per_inference']:,.0f}"
          f" per inference" + (" (golden model)" if r.get("kind") == "overlay" else ""))
    print(f"  over the link:           {r['host_seconds_per_inference'] * 1e3:.1f} ms per inference "
          f"(host, UART at {r['baud']:,} baud)")
    if len(r["per_inference"]) <= 16:
        print(f"  {'input':>5} {'class':>5} {'golden':>6} {'cycles':>8} {'events':>7} {'synops':>9}")
        for i, p in enumerate(r["per_inference"]):
            print(f"  {i:>5} {p['class']:>5} {p['golden_class']:>6} {p['cycles']:>8,} {p['events']:>7,} "
                  f"{p['synops']:>9,}")


# ---------------------------------------------------------------- flash

def resolve_bitstream(target: str, board: str | None):
    """``(bitstream path, board spec)`` from a build folder (its report names the board) or a .bit file."""
    path = Path(target)
    report_board = None
    if path.is_dir():
        report = path / "report.json"
        name = "top.bit"
        if report.is_file():
            data = read_build_report(report)
            name = data.get("bitstream", name)
            report_board = data.get("board")
        bit = path / name
        if not bit.is_file():
            raise UserError(f"{path}: no bitstream {name} in this folder; build it first "
                            f"(python -m compiler build MODEL --board BOARD --out {path})")
    elif path.suffix == ".bit" or path.is_file():
        bit = path
        if not bit.is_file():
            raise UserError(f"{bit}: no such bitstream")
        sibling = bit.parent / "report.json"
        if sibling.is_file():
            try:
                report_board = read_build_report(sibling).get("board")
            except UserError:
                report_board = None
    else:
        raise UserError(f"{path}: no such build folder or bitstream")
    if board is None:
        if report_board is None:
            raise UserError("--board is needed: no build report says which board this bitstream is for")
        board = report_board
    spec = get_board(board)
    if report_board is not None and get_board(report_board).name != spec.name:
        raise UserError(f"{bit} was built for the {get_board(report_board).name}, not the {spec.name}")
    return bit, spec


def flash_target(args) -> int:
    bit, spec = resolve_bitstream(args.target, args.board)
    if args.dry_run:
        program = find_openfpgaloader() or "openFPGALoader"
        print(shlex.join(flash_command(bit, spec, to_flash=args.flash, cable=args.cable, program=program)))
        return 0
    flash(bit, spec, to_flash=args.flash, cable=args.cable)
    print(f"loaded {bit} into the {spec.name}'s {'SPI flash' if args.flash else 'FPGA (SRAM: lost at power-off)'}")
    return 0
