"""The overlay's program (``compiler.hw.program``) run by its interpreter (``sim.npu_model``) on the overlay's
memory layouts: bit-exact against the golden model in every stored tensor, for the bundled model, the
configurations the generated accelerator of 0.1 was tested on (:data:`CONFIGS`) and random ones. Also: the descriptor's binary format, the
liveness allocation, the listing, and models that do not fit a configuration."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.errors import UserError
from compiler.flows.lower import lower
from compiler.frontend.config import ModelConfig
from compiler.frontend.data import load_dataset
from compiler.frontend.train import train
from compiler.hw.program import compile_program, fit_config
from compiler.ir import golden
from hdl.npu.isa import (DESCRIPTOR_WORDS, FETCH_TARGETS, Bank, Config, Descriptor, Kind, Mem, Operand, Post, pack_lanes,
                         pack_rows, unpack_rows)
from sim import npu_model


def _check(graph, x, program=None):
    """Every sample of ``x`` through the program: logits and every stored tensor equal the golden model's."""
    program = program or compile_program(graph)
    want, env = golden.run(graph, x, trace=True)
    for i in range(len(x)):
        got, tensors = npu_model.run(program, x[i], trace=True)
        for name, arr in tensors.items():
            ref = env[name][i]
            assert np.array_equal(ref[:arr.shape[0]].reshape(arr.shape), arr), (i, name)
            assert arr.shape[0] == ref.shape[0] or (ref == ref[:1]).all(), (i, name)   # a shared frame is shared
        assert np.array_equal(got, want[i]), i
    return program


def test_bundled_model_is_bit_exact(digits_graph, digits_test):
    program = _check(digits_graph, digits_test.x[:24])
    assert program.descriptors[-1].kind == Kind.END
    assert [d.kind for d in program.descriptors].count(Kind.MATMUL) == 8   # stem, q, k, v, proj, fc1, fc2, head
    assert program.listing().count("\n") == len(program.descriptors) + 1


CONFIGS = {   # the 0.1 generator's test configurations, plus a deeper and a wider one
    "sdsa1-T2-D1-b2": dict(attention="sdsa1", timesteps=2, levels=1, bits=2, dim=16, heads=2, classes=4),
    "events-T3-D2-b8": dict(attention="linear", timesteps=3, levels=2, bits=8, dim=24, heads=3, input="events"),
    "rgb-b3-hidden24": dict(timesteps=1, levels=4, bits=3, dim=16, heads=1, mlp_ratio=1.5, channels=3),
    "sdsa1-depth2-d2": dict(attention="sdsa1", levels=4, bits=4, depth=2, dim=8, heads=4),
    "16px-T2-8heads": dict(timesteps=2, levels=1, bits=2, dim=32, heads=8, pos_embed=False, image_size=16, patch=4),
    "depth3-dim20": dict(depth=3, dim=20, heads=5, timesteps=2, levels=2),
}


def _model(cfg: ModelConfig, seed: int = 0, count: int = 4):
    data = load_dataset("synthetic", cfg, "test", count=count, seed=seed)
    model = train(cfg, load_dataset("synthetic", cfg, "train", count=32, seed=seed), epochs=0, seed=seed,
                  progress=False)
    return lower(model), data.x


@pytest.mark.parametrize("name", CONFIGS)
def test_configurations_are_bit_exact(name):
    graph, x = _model(ModelConfig(**CONFIGS[name]))
    _check(graph, x, compile_program(graph, fit_config(graph, lanes=8)))


configs = st.fixed_dictionaries(dict(
    input=st.sampled_from(["image", "events"]), image_size=st.sampled_from([4, 6, 8]), channels=st.integers(1, 3),
    classes=st.integers(2, 7), patch=st.sampled_from([1, 2]), dim=st.sampled_from([6, 9, 12, 16, 21]),
    depth=st.integers(1, 2), heads=st.sampled_from([1, 3]), mlp_ratio=st.sampled_from([1.0, 1.5, 2.0]),
    bits=st.sampled_from([2, 3, 4, 8]), levels=st.sampled_from([1, 2, 4]), timesteps=st.integers(1, 3),
    attention=st.sampled_from(["sdsa1", "linear"]), pos_embed=st.booleans(),
)).filter(lambda c: c["dim"] % c["heads"] == 0 and c["image_size"] % c["patch"] == 0).map(lambda c: ModelConfig(**c))


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, lanes=st.sampled_from([1, 3, 4, 7, 16]), seed=st.integers(0, 3))
def test_random_configurations_are_bit_exact(cfg, lanes, seed):
    """Any lane count: it need not divide any width (the last group of a layer is padded)."""
    graph, x = _model(cfg, seed, count=2)
    _check(graph, x, compile_program(graph, fit_config(graph, lanes)))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data())
def test_descriptor_round_trips(data):
    ints = {name: data.draw(st.integers(0, (1 << bits) - 1)) for name, bits in
            (("tokens", 12), ("steps", 4), ("in_ch", 16), ("out_ch", 12), ("wbase", 20), ("shift", 6),
             ("conv_k", 3), ("conv_stride", 3), ("conv_pad", 3), ("conv_groups", 8), ("in_height", 9),
             ("in_width", 9), ("out_width", 9), ("conv_rowstep", 16), ("conv_origin", 16))}
    ops = [Operand(Bank(data.draw(st.integers(0, 1))), *(data.draw(st.integers(0, 65535)) for _ in range(3)))
           for _ in range(4)]
    d = Descriptor(Kind(data.draw(st.integers(0, len(Kind) - 1))), post=Post(data.draw(st.integers(0, 2))),
                   add=data.draw(st.booleans()), reduce=data.draw(st.booleans()), src0=ops[0], src1=ops[1],
                   src2=ops[2], dst=ops[3], **ints)
    words = d.encode()
    assert len(words) == DESCRIPTOR_WORDS and all(0 <= w < 1 << 32 for w in words)
    assert Descriptor.decode(words) == d


def test_a_field_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="tokens = 4096 does not fit 12 bits"):
        Descriptor(Kind.MATMUL, tokens=4096).encode()


def test_liveness_reuses_words(digits_graph):
    """Live tensors never share a word, but a residual add's output, which takes its residual's words when the
    add reads the residual last; dead ones give theirs back (the bundled model's 11 tensors fit in the words of
    its 3 largest live ones)."""
    program = compile_program(digits_graph)
    spans = {}
    for k, layer in enumerate(program.layers):
        for name in (*[s for s in layer.srcs if s], layer.dst):
            if name:
                first, _ = spans.get(name, (k, k))
                spans[name] = (first, k)
    spans[program.input_name] = (-1, spans[program.input_name][1])
    in_place = {(layer.srcs[1], layer.dst) for layer in program.layers if layer.desc.add
                and program.operands[layer.srcs[1]].base == program.operands[layer.dst].base}
    assert len(in_place) == 2                      # the residual stream: its block's attention and MLP
    names = list(spans)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ta, tb = program.tensors[a], program.tensors[b]
            if ta.bank != tb.bank:
                continue
            (fa, la), (fb, lb) = spans[a], spans[b]
            if fa <= lb and fb <= la:              # alive together
                oa, ob = program.operands[a].base, program.operands[b].base
                if (a, b) in in_place:             # the add's output over its residual, read last by it
                    assert oa == ob and la == fb, (a, b)
                    continue
                wa, wb = ta.words(program.config.lanes), tb.words(program.config.lanes)
                assert oa + wa <= ob or ob + wb <= oa, (a, b)
    total = sum(t.words(program.config.lanes) for t in program.tensors.values())
    assert sum(program.bank_words.values()) < total


def test_a_model_too_big_is_refused_with_every_shortfall(digits_graph):
    with pytest.raises(UserError) as exc:
        compile_program(digits_graph, Config(lanes=16, weight_bits=2, weight_depth=100, spike_depth=10))
    msg = str(exc.value)
    assert "\n" not in msg
    for knob in ("weight_bits", "weight_depth", "spike_depth"):
        assert f"({knob})" in msg


def test_the_fitted_configuration_is_the_smallest(digits_graph):
    """Every field of ``fit_config`` is needed: one less and the program is refused, naming that field."""
    cfg = fit_config(digits_graph, lanes=8)
    compile_program(digits_graph, cfg)
    for knob in ("spike_bits", "wide_bits", "acc_bits", "mult_bits", "post_bits", "weight_depth", "spike_depth",
                 "levels", "logit_bits"):
        with pytest.raises(UserError, match=rf"\({knob}\)"):
            compile_program(digits_graph, cfg.with_(**{knob: getattr(cfg, knob) - 1}))


def test_events_and_listing_follow_the_samples(digits_graph, digits_test):
    """The events per descriptor and frame that the listing's cycles come from are those the interpreter
    consumes, and the cycles grow with them."""
    program = compile_program(digits_graph)
    x = digits_test.x[:3]
    events = program.events(x)
    machines = []
    for sample in x:
        m = npu_model.Machine(program.config, program.weights, program.mult, program.bias, program.theta)
        inp = program.input
        for f, frame in enumerate(program.input_elements(sample)):
            m.write(program.operands[inp.name], f, frame)
        for d in program.descriptors[:-1]:
            m.execute(d)
        machines.append(m)
    for d, e in zip(program.descriptors, events):           # frame by frame
        per_sample = [np.asarray(m.events.get(d.name, 0.0), float) for m in machines]
        assert np.shape(e) == per_sample[0].shape, d.name
        assert np.allclose(e, np.mean(per_sample, axis=0)), d.name
    quiet, busy = program.cycles(), program.cycles(events)
    assert all((q is None and b is None) or b > q for q, b, d in zip(quiet, busy, program.descriptors)
               if d.kind == Kind.MATMUL)
    text = program.listing(events)
    assert "cycles per inference" in text and "block0.mlp.fc1" in text


def test_inspect_prints_the_program(capsys):
    from compiler import cli
    from conftest import EXAMPLE
    import json
    assert cli.main(["inspect", str(EXAMPLE), "--program", "--lanes", "8", "--count", "4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    prog = r["program"]
    assert r["schema_version"] == 1 and prog["lanes"] == 8 and prog["config"]["lanes"] == 8
    assert [d["kind"] for d in prog["descriptors"]][-1] == "END" and len(prog["descriptors"]) == 13
    assert all(d["cycles"] > 0 for d in prog["descriptors"] if d["kind"] in ("MATMUL", "ELEMENTWISE"))
    assert "block0.mlp.fc2" in prog["listing"]


WINDOWED = {   # conv stems: 3x3 convs with padding, stride-2 spike max-pooling, the conv position embedding
    "spikformer-8px": dict(arch="spikformer", dims=(8, 16), depths=(1,), image_size=8, heads=2),
    "spikformer-12px-T2-rgb": dict(arch="spikformer", dims=(8, 12, 16), depths=(1,), image_size=12, channels=3,
                                   heads=2, timesteps=2, levels=2, bits=3),
}


@pytest.mark.parametrize("lanes", [16, 5])
@pytest.mark.parametrize("name", WINDOWED)
def test_conv_stems_are_bit_exact(name, lanes):
    graph, x = _model(ModelConfig(**WINDOWED[name]), count=2)
    program = _check(graph, x, compile_program(graph, fit_config(graph, lanes)))
    windows = [d for d in program.descriptors if d.conv_k]
    assert {d.kind for d in windows} == {Kind.MATMUL, Kind.MAXPOOL}
    assert "conv3/1" in program.listing() and "maxpool3/2" in program.listing()


spikformers = st.fixed_dictionaries(dict(
    image_size=st.sampled_from([6, 7, 8, 10]), channels=st.integers(1, 3), classes=st.integers(2, 5),
    dims=st.sampled_from([(4, 8), (6, 6), (5, 9, 12), (8,)]), heads=st.sampled_from([1, 2]),
    bits=st.sampled_from([2, 4, 8]), levels=st.sampled_from([1, 2, 4]), timesteps=st.integers(1, 2),
    attention=st.sampled_from(["sdsa1", "linear"]),
)).filter(lambda c: c["dims"][-1] % c["heads"] == 0).map(lambda c: ModelConfig(arch="spikformer", depths=(1,), **c))


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=spikformers, lanes=st.sampled_from([1, 3, 4, 16]), seed=st.integers(0, 3))
def test_random_conv_stems_are_bit_exact(cfg, lanes, seed):
    graph, x = _model(cfg, seed, count=2)
    _check(graph, x, compile_program(graph, fit_config(graph, lanes)))


METAFORMERS = {   # conv stem, strided downsampling, SepConv (signed small-integer events into the pointwise conv,
    # a 7x7 depthwise conv as a block-diagonal one) and channel-conv blocks, then transformer stages
    "metaformer-2stage": dict(arch="metaformer", dims=(4, 8), depths=(1, 1), image_size=8, heads=2),
    "metaformer-4stage-T2": dict(arch="metaformer", dims=(4, 6, 8, 8), depths=(1, 1, 1, 1), image_size=16, heads=2,
                                 timesteps=2),
    "metaformer-membrane-head": dict(arch="metaformer", dims=(4, 8), depths=(1, 1), image_size=8, heads=2,
                                     head="membrane", channels=3),
}


@pytest.mark.parametrize("lanes", [16, 5])
@pytest.mark.parametrize("name", METAFORMERS)
def test_metaformers_are_bit_exact(name, lanes):
    graph, x = _model(ModelConfig(**METAFORMERS[name]), count=2)
    program = _check(graph, x, compile_program(graph, fit_config(graph, lanes)))
    wide_events = [layer for d, layer in zip(program.descriptors, program.layers)
                   if d.kind == Kind.MATMUL and program.tensors[layer.srcs[0]].lo < 0]
    assert wide_events                                # the SepConv's signed events are there


metaformers = st.fixed_dictionaries(dict(
    image_size=st.sampled_from([8, 10, 12]), channels=st.integers(1, 3), classes=st.integers(2, 5),
    stages=st.sampled_from([((4, 8), (1, 1)), ((4, 6, 8), (1, 1, 1)), ((6, 6, 8, 8), (1, 1, 1, 1)), ((8,), (1,))]),
    heads=st.sampled_from([1, 2]), bits=st.sampled_from([2, 4, 8]), levels=st.sampled_from([1, 2, 4]),
    timesteps=st.integers(1, 2), head=st.sampled_from(["spikes", "membrane"]),
)).map(lambda c: _metaformer(**c))


def _metaformer(stages, **kw):
    dims, depths = stages
    return ModelConfig(arch="metaformer", dims=dims, depths=depths, **kw)


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=metaformers, lanes=st.sampled_from([1, 3, 4, 16]), seed=st.integers(0, 3))
def test_random_metaformers_are_bit_exact(cfg, lanes, seed):
    graph, x = _model(cfg, seed, count=2)
    _check(graph, x, compile_program(graph, fit_config(graph, lanes)))


def test_a_narrow_post_unit_takes_each_groups_parameters_in_steps(digits_graph):
    """With ``post_lanes`` 4 of 16 lanes, each parameter word of a lane group becomes 4 words of 4 lanes, lowest
    lanes first, and each post costs 4 cycles a group instead of 1."""
    from hdl.npu.isa import Mem
    full = compile_program(digits_graph, fit_config(digits_graph, 16))
    narrow = compile_program(digits_graph, fit_config(digits_graph, 16, post_lanes=4))
    c = narrow.config
    assert (c.post_width, c.post_steps) == (4, 4)
    for mem, lane_bits in ((Mem.MULT, c.mult_bits), (Mem.BIAS, c.bias_bits), (Mem.THETA, c.levels * c.theta_bits)):
        wide, steps = full.images()[mem], narrow.images()[mem]
        assert len(steps) == 4 * len(wide) and any(wide), mem.name
        for g, word in enumerate(wide):
            assert word == sum(steps[4 * g + r] << (r * 4 * lane_bits) for r in range(4)), (mem.name, g)
    # a post of G groups: G cycles on the full post unit, 4 G on the narrow one (exact cycles: test_npu_overlay);
    # every post but a descriptor's last runs beside the next frame, which hides most of it
    posts = sum((1 if d.reduce else d.tokens * d.steps) * -(-d.out_ch // 16) for d in narrow.descriptors
                if d.kind == Kind.MATMUL)
    last = sum(-(-d.out_ch // 16) for d in narrow.descriptors if d.kind == Kind.MATMUL)
    more = [n - f for n, f, d in zip(narrow.cycles(), full.cycles(), narrow.descriptors) if d.kind == Kind.MATMUL]
    assert 0 < 3 * last <= sum(more) < 3 * posts
    for bad in (3, 17, -1):
        with pytest.raises(ValueError, match="post_lanes"):
            Config(lanes=16, post_lanes=bad)


def test_wide_layers_are_split_into_tiles_of_the_accumulators(digits_graph, digits_test):
    """With accumulators for fewer output groups than a MATMUL has, it runs as several descriptors (tiles), each
    with its rows of weights and parameters and its channels of dst (and of a residual): still bit-exact."""
    cfg = fit_config(digits_graph, 16)
    assert cfg.out_groups == 16               # twice fc1's 128 channels: no tiles, each post beside the next frame
    small = cfg.with_(out_groups=3, program_depth=32)               # 128 channels: tiles of 3, 3 and 2 groups
    program = _check(digits_graph, digits_test.x[:6], compile_program(digits_graph, small))
    names = [d.name for d in program.descriptors]
    assert "block0.mlp.fc1[0:48]" in names and "block0.mlp.fc1[96:128]" in names
    assert "block0.mlp.fc2[0:48]" not in names                      # fc2's 32 channels fit in 3 groups
    whole = compile_program(digits_graph, cfg)
    assert len(program.weights) == len(whole.weights)               # the same weights, in tile order
    tiles = [d for d in program.descriptors if d.name.startswith("block0.mlp.fc1[")]
    assert [d.out_ch for d in tiles] == [48, 48, 32]
    assert [d.dst.base - tiles[0].dst.base for d in tiles] == [0, 3, 6]
    with pytest.raises(UserError, match=r"\(out_groups\)"):          # attention's heads are not tiled
        compile_program(digits_graph, cfg.with_(out_groups=1))


def test_weights_beyond_the_store_are_fetched_from_external_memory(digits_graph, digits_test):
    """With a weight store too small for the model and an external memory, every weighted layer is FETCHed
    tile by tile into alternate halves of the store right before it runs (or while the tile before it runs);
    with parameter memories too small, the per-channel parameters of runs of layers into alternate halves of
    their memories before the first of them; each streams only if it does not fit: still bit-exact."""
    cfg = fit_config(digits_graph, 16).with_(ext_depth=4096, program_depth=128)
    assert cfg.weight_depth == 808                                  # all on chip: no FETCH
    on_chip = compile_program(digits_graph, cfg)
    assert on_chip.ext is None and not any(d.kind == Kind.FETCH for d in on_chip.descriptors)
    assert cfg.param_depth == 59
    weights_only = _check(digits_graph, digits_test.x[:2], compile_program(digits_graph, cfg.with_(weight_depth=256)))
    assert {d.fetch_to for d in weights_only.descriptors if d.kind == Kind.FETCH} == {0}    # parameters on chip
    params_only = _check(digits_graph, digits_test.x[:2], compile_program(digits_graph, cfg.with_(param_depth=40)))
    assert len(params_only.weights) == 808 and 0 not in {d.fetch_to for d in params_only.descriptors
                                                         if d.kind == Kind.FETCH}
    # halves of 128 weight words (fc1, I = 32, in 4 tiles) and of 20 parameter groups
    small = cfg.with_(weight_depth=256, param_depth=40)
    program = _check(digits_graph, digits_test.x[:6], compile_program(digits_graph, small))
    descs = program.descriptors
    history = {mem: [] for mem in FETCH_TARGETS}                   # memory -> its FETCHes so far
    for k, d in enumerate(descs):
        if d.kind == Kind.FETCH:
            mem = FETCH_TARGETS[d.fetch_to]
            half = 128 if mem == Mem.WEIGHTS else 20
            assert d.wbase == (0 if not history[mem] else half - history[mem][-1].wbase) and d.in_ch <= half
            history[mem].append(d)
            continue
        if d.overlap:                                               # runs while the FETCH just before it does
            assert descs[k - 1].kind == Kind.FETCH

        def done(mem):                                              # the last FETCH of mem that has finished
            ready = [f for f in history[mem] if not (d.overlap and f is descs[k - 1])]
            return ready[-1]
        if d.kind == Kind.MATMUL:                                   # its weights: the last weight FETCH done
            f = done(Mem.WEIGHTS)
            assert d.wbase == f.wbase and f.in_ch == -(-d.out_ch // 16) * d.in_ch <= 128
        if d.kind != Kind.END:                                      # its parameters: in the last FETCH's rows
            f = done(Mem.MULT)
            assert f.wbase <= d.mult_base and d.mult_base + -(-d.out_ch // 16) <= f.wbase + f.in_ch
    weight_fetches = len(history[Mem.WEIGHTS])
    assert sum(d.overlap for d in descs) >= weight_fetches - 2      # nearly every tile's weights arrive during
    #                                                                 the tile before it
    tiles = [d for d in descs if d.kind == Kind.MATMUL and d.name.startswith("stem@")]     # a per-token bias
    assert len(tiles) > 1 and sum(d.tokens for d in tiles) == on_chip.descriptors[0].tokens
    assert weight_fetches == sum(d.kind == Kind.MATMUL for d in descs) - len(tiles) + 1
    assert len(program.weights) == 0 and len(program.ext) >= len(on_chip.weights)
    assert "fetch" in program.listing() and "streamed" in program.listing()
    with pytest.raises(UserError, match=r"\(ext_depth\)"):
        compile_program(digits_graph, small.with_(ext_depth=1024))
    with pytest.raises(UserError, match=r"\(weight_depth\)"):       # fc2's 128 inputs: 128 words a group
        compile_program(digits_graph, small.with_(weight_depth=200))


@settings(max_examples=30, deadline=None)
@given(values=st.integers(1, 20), bits=st.integers(1, 40), rows=st.integers(0, 9), seed=st.integers(0, 1 << 20))
def test_external_rows_are_the_load_ports_words(values, bits, rows, seed):
    """A FETCH's rows as the SDRAM holds them: each row the word that the load port would write (``pack_lanes``),
    in ``ceil(values * bits / 16)`` 16-bit words, low first; and back."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(rows, values))
    ratio = -(-values * bits // 16)
    words = pack_rows(x, bits, ratio)
    assert words.dtype == np.uint16 and len(words) == rows * ratio
    for r in range(rows):
        row = words[r * ratio:(r + 1) * ratio]
        assert sum(int(w) << (16 * k) for k, w in enumerate(row)) == pack_lanes(x[r], bits)
    assert np.array_equal(unpack_rows(words, values, bits, ratio, True).reshape(rows, values), x)
