"""bench.throughput's reading of a build report: an overlay build's met clock, lanes and post unit (the
throughput run itself compiles and simulates a model, by hand: docs/model.md)."""

from __future__ import annotations

import json

import pytest

from bench.throughput import _from_report


def test_an_overlay_report_gives_its_met_clock_lanes_and_post_unit(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"kind": "overlay", "clock_mhz": 54.17, "fmax_mhz": 57.3,
                                "overlay": {"config": {"lanes": 16, "post_lanes": 4}}}))
    assert _from_report(path) == (54.17, 16, 4)


def test_another_report_gives_its_fmax_and_no_configuration(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"timing": {"fmax_mhz": 101.3}}))
    assert _from_report(path) == (101.3, None, 0)


def test_a_report_without_a_clock_is_refused(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{}")
    with pytest.raises(SystemExit, match="names no Fmax"):
        _from_report(path)
