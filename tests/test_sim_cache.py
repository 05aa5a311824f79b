"""The simulator cache: keyed on what determines the Verilog (found without generating it), bounded."""

import dataclasses
import enum
import fcntl
import os
import time

import numpy as np
import pytest
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdl.hostbus import READ_LATENCY, HostBusSignature
from sim import cache, verilator_host


class _Device(wiring.Component):
    bus: In(HostBusSignature(8))

    def elaborate(self, platform):
        raise AssertionError("elaborated for a cached design")


@dataclasses.dataclass
class _Cfg:
    lanes: int
    widths: tuple
    table: np.ndarray


class _Kind(enum.Enum):
    A = 1
    B = 2


def test_digest_is_equal_for_equal_content_and_differs_for_any_difference():
    base = _Cfg(4, (8, 16), np.arange(6, dtype=np.int64))
    assert cache.digest(base) == cache.digest(_Cfg(4, (8, 16), np.arange(6, dtype=np.int64)))
    variants = [
        _Cfg(8, (8, 16), np.arange(6, dtype=np.int64)),                    # a field
        _Cfg(4, (16, 8), np.arange(6, dtype=np.int64)),                    # an order
        _Cfg(4, [8, 16], np.arange(6, dtype=np.int64)),                    # a type
        _Cfg(4, (8, 16), np.arange(6, dtype=np.int32)),                    # a dtype
        _Cfg(4, (8, 16), np.arange(6, dtype=np.int64).reshape(2, 3)),      # a shape
        _Cfg(4, (8, 16), np.array([0, 1, 2, 3, 4, 6])),                    # one element
    ]
    digests = {cache.digest(v) for v in variants} | {cache.digest(base)}
    assert len(digests) == len(variants) + 1
    assert cache.digest({"a": 1, "b": 2}) != cache.digest({"b": 2, "a": 1})      # insertion order is content
    assert cache.digest(_Kind.A) != cache.digest(_Kind.B)
    assert cache.digest(1) != cache.digest(1.0) != cache.digest(True)


def test_digest_refuses_what_it_cannot_take_apart():
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="cyclic"):
        cache.digest(loop)
    with pytest.raises(TypeError, match="object array"):
        cache.digest(np.array([object()]))


def test_the_overlays_key_follows_its_configuration():
    """A Verilated overlay is cached by its configuration: equal ones share a binary, any field apart does not."""
    from hdl.npu.isa import Config
    key = ("OverlayBus", Config(lanes=5, post_lanes=1))
    assert cache.digest(key) == cache.digest(("OverlayBus", Config(lanes=5, post_lanes=1)))
    assert cache.digest(key) != cache.digest(("OverlayBus", Config(lanes=5, post_lanes=5)))
    assert cache.digest(key) != cache.digest(("OverlayBus", Config(lanes=5, post_lanes=1, weight_depth=4096)))


def test_sources_and_tools_are_in_the_key(monkeypatch):
    first = cache.key_digest(("x", 1), "harness")
    assert first == cache.key_digest(("x", 1), "harness")
    assert first != cache.key_digest(("x", 2), "harness")
    assert first != cache.key_digest(("x", 1), "another harness")
    monkeypatch.setattr(cache, "sources_digest", lambda: "edited")
    assert first != cache.key_digest(("x", 1), "harness")
    monkeypatch.undo()
    monkeypatch.setattr(cache, "tool_versions", lambda: {"verilator": "0"})
    assert first != cache.key_digest(("x", 1), "harness")


def test_a_keyed_binary_is_found_without_generating_verilog(tmp_path, monkeypatch):
    harness = verilator_host._HARNESS.replace("@READ_LATENCY@", str(READ_LATENCY))
    digest = cache.key_digest((("host-bus", ("test", 7)), verilator_host.HARNESS_FLAGS), harness)
    entry = tmp_path / f"verilator-{digest}"
    entry.mkdir()
    (entry / "Vtop_sim").write_text("")
    os.utime(entry, (1, 1))

    def no_verilog(*args, **kwargs):
        raise AssertionError("the Verilog was generated for a cached design")

    monkeypatch.setattr(verilator_host.verilog, "convert", no_verilog)
    t0 = time.monotonic()
    path = verilator_host.build(_Device(), tmp_path, key=("test", 7))
    assert path == (entry / "Vtop_sim").resolve() and time.monotonic() - t0 < 0.5
    assert entry.stat().st_mtime > time.time() - 60           # marked as used: the last to be pruned


def _entries(root, count, age):
    now = time.time()
    made = []
    for k in range(count):
        entry = root / f"verilator-{k:016x}"
        entry.mkdir()
        (entry / "Vtop_sim").write_bytes(b"x" * 10)
        os.utime(entry, (now - age - k, now - age - k))            # entry 0 the most recently used
        made.append(entry)
    return made


def test_prune_keeps_the_most_recently_used(tmp_path):
    made = _entries(tmp_path, 5, age=2 * cache.GRACE_SECONDS)
    (tmp_path / "other.txt").write_text("not a cache entry")
    (tmp_path / ".verilator-0000000000000009-x").mkdir()            # a build in progress: not an entry
    removed = cache.prune(tmp_path, keep=2)
    assert sorted(removed) == sorted(made[2:])
    assert all(e.exists() for e in made[:2]) and not any(e.exists() for e in made[2:])
    assert (tmp_path / "other.txt").exists() and (tmp_path / ".verilator-0000000000000009-x").exists()
    assert cache.prune(tmp_path, keep=0) == []                         # 0: no bound


def test_prune_spares_recent_and_locked_entries(tmp_path):
    recent = _entries(tmp_path, 3, age=0)
    assert cache.prune(tmp_path, keep=1) == []                         # all used within the grace period
    for k, e in enumerate(recent):
        os.utime(e, (100 - k, 100 - k))                                # long unused; entry 0 the most recent
    with open(tmp_path / f"{recent[2].name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                               # being built: never removed
        removed = cache.prune(tmp_path, keep=1)
    assert recent[2].exists() and len(removed) == 1


def test_keep_count_from_the_environment(monkeypatch):
    monkeypatch.delenv(cache.KEEP_ENV, raising=False)
    assert cache.keep_count() == cache.DEFAULT_KEEP
    monkeypatch.setenv(cache.KEEP_ENV, "3")
    assert cache.keep_count() == 3
    monkeypatch.setenv(cache.KEEP_ENV, "many")
    with pytest.raises(ValueError, match=cache.KEEP_ENV):
        cache.keep_count()
