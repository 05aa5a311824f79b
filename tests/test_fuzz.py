"""Property-based fuzzing (bounded budgets) of what the tools read from outside: checkpoints, ``.npy`` inputs,
build reports and the host's frame parser. Whatever the bytes, the answer is a value or the module's own
error (a one-line ``UserError`` / ``LinkError``), never another exception."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.errors import UserError
from compiler.flows.run import read_build_report
from compiler.frontend import checkpoint
from compiler.frontend.config import ModelConfig
from compiler.frontend.data import load_inputs
from compiler.host import link as lk
from hdl.protocol import CMD_PING
from conftest import EXAMPLE

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
report_like = st.fixed_dictionaries({}, optional={
    "model_id": json_values | st.just("6eba9a86"), "board": json_values | st.sampled_from(["ulx3s", "ecpix5"]),
    "bitstream": json_values | st.sampled_from(["top.bit", "../top.bit", "/etc/passwd", "a/b.bit", ".bit"]),
    "clock_mhz": json_values | st.sampled_from([100.0, 0, -1, float("inf")])})


@FUZZ
@given(report=json_values | report_like)
def test_build_report_reader(tmp_path, report):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    try:
        got = read_build_report(path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(got, dict)
    bit = got.get("bitstream")
    assert bit is None or ("/" not in bit and bit.endswith(".bit") and bit not in (".", ".."))


@FUZZ
@given(data=st.binary(max_size=400), prefix=st.booleans())
def test_npy_reader(tmp_path, data, prefix):
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 1, 8, 8), np.uint8))
    raw = buf.getvalue()
    path = tmp_path / "x.npy"
    path.write_bytes(raw[:len(raw) // 2] + data if prefix else data)     # a valid start, then anything
    cfg = ModelConfig()
    try:
        x = load_inputs(path, cfg, count=3)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert x.dtype == np.uint8 and x.shape[1:] == cfg.input_shape() and 1 <= len(x) <= 3


@pytest.fixture(scope="module")
def digits_bytes():
    return EXAMPLE.read_bytes()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4),
       truncate=st.none() | st.integers(0, 1 << 20))
def test_checkpoint_loader(tmp_path, digits_bytes, cuts, truncate):
    """The bundled checkpoint with bytes overwritten and/or cut short: refused with a UserError, or (a byte
    that nothing reads) loaded as the same model."""
    data = bytearray(digits_bytes)
    for at, value in cuts:
        data[at % len(data)] = value
    if truncate is not None:
        data = data[:truncate % len(data)]
    path = tmp_path / "m.pt"
    path.write_bytes(bytes(data))
    try:
        model = checkpoint.load(path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    reference = checkpoint.load(EXAMPLE).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())


@FUZZ
@given(payload=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_checkpoint_payloads(tmp_path, payload):
    """Any weights-only payload (a dict of plain values) is refused with a UserError or loads."""
    path = tmp_path / "p.pt"
    torch.save(payload, path)
    with pytest.raises(UserError):
        checkpoint.load(path)


@FUZZ
@given(answer=st.binary(max_size=64))
def test_host_frame_parser(answer):
    """Whatever a device answers, a request ends with a payload or a LinkError, within its deadline."""
    class Device:
        timeout = 0.01

        def __init__(self):
            self.pending = b""

        def write(self, data):
            self.pending = answer
            return len(data)

        def read(self, size):
            out, self.pending = self.pending[:size], self.pending[size:]
            return out

    link = lk.Link(Device(), timeout=0.01, deadline=0.05, retries=1, drain_quiet=0.001)
    try:
        link.request(lk.encode_request(CMD_PING))
    except lk.LinkError as exc:
        assert "\n" not in str(exc)


def test_an_archive_whose_member_fails_its_crc_is_refused(tmp_path):
    """A checkpoint archive whose member does not match its CRC is refused before torch reads it."""
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"\x80\x02")] ^= 0xFF                      # flip a byte of the stored member
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt archive"):
        checkpoint.load(path)


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    import time
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data/0", "w") as f:
            for _ in range(256):
                f.write(bytes(1 << 20))                      # 256 MiB of zeros, a few hundred KiB packed
    t0 = time.monotonic()
    with pytest.raises(UserError, match="unpacks to 256 MiB"):
        checkpoint.load(path)
    assert time.monotonic() - t0 < 0.5
