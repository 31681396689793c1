"""Issue 16: the native kernels on GGUF blocks, checked against gguf-py and numpy.

Random blocks (random bytes, with finite fp16 scales written where each format keeps them) must
dequantize exactly as gguf-py's reference does; matmuls and whole decode steps on them must match
numpy on the dequantized weights to within what 8-bit activations allow (as in llama.cpp)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from storyloom.engine import native

gguf = pytest.importorskip("gguf")
cc = native.compiler()
pytestmark = pytest.mark.skipif(cc is None, reason="no C compiler")

# where each format keeps its fp16 scales (byte offsets in a block), and their size
SCALES = {native.Q4_0: ([0], 8e-3), native.Q4_1: ([0, 2], 8e-3), native.Q5_0: ([0], 4e-3),
          native.Q8_0: ([0], 8e-4), native.Q4_K: ([0, 2], 3e-4), native.Q5_K: ([0, 2], 1.5e-4),
          native.Q6_K: ([208], 6e-5)}
QUANTIZED = list(SCALES)
FLOATS = [native.F32, native.F16, native.BF16]


@pytest.fixture(scope="module")
def lib(native_builds):
    mp = pytest.MonkeyPatch()
    mp.setenv("STORYLOOM_MODELS", str(native_builds))
    yield native.build(cc)
    mp.undo()


def blocks(kind: int, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, row_bytes] uint8 of random weights in GGUF's layout for `kind`."""
    if kind in FLOATS:
        w = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)
        if kind == native.F16:
            return w.astype(np.float16).view(np.uint8)
        if kind == native.BF16:
            return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return w.view(np.uint8)
    per_block = native.type_bytes(kind)
    n = rows * cols // native.block_size(kind)
    data = rng.integers(0, 256, (n, per_block), dtype=np.uint8)
    offsets, size = SCALES[kind]
    for at in offsets:
        scale = (rng.uniform(0.2, 1.0, n) * size * rng.choice([-1, 1], n)).astype(np.float16)
        data[:, at:at + 2] = scale.view(np.uint8).reshape(n, 2)
    return data.reshape(rows, -1)


def reference(kind: int, data: np.ndarray, cols: int) -> np.ndarray:
    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType(kind)).reshape(data.shape[0], cols).astype(np.float32)


def matrix(kind: int, data: np.ndarray, cols: int, bias: np.ndarray | None = None, keep: list | None = None) -> native.Matrix:
    m = native.Matrix()
    m.type, m.rows, m.cols = kind, data.shape[0], cols
    m.data = data.ctypes.data
    m.bias = bias.ctypes.data if bias is not None else None
    if keep is not None:
        keep.extend([data, bias])
    return m


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def test_the_ctypes_structs_are_the_c_structs(lib):
    sizes = [lib.sl_sizeof(i) for i in range(3)]
    assert sizes == [ctypes.sizeof(native.Matrix), ctypes.sizeof(native.Layer), ctypes.sizeof(native.Model)]


def test_block_sizes_are_ggufs():
    for kind in QUANTIZED + FLOATS:
        size, per_block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        assert (native.block_size(kind), native.type_bytes(kind)) == (size, per_block)
    with pytest.raises(ValueError):
        native.block_size(10)  # Q2_K: not one the step runs


@pytest.mark.parametrize("kind", QUANTIZED + FLOATS, ids=lambda k: native.TYPE_NAMES[k])
def test_dequant_is_gguf_pys_bit_for_bit(lib, kind):
    import torch

    rng = np.random.default_rng(kind)
    rows, cols = 5, 512
    data = blocks(kind, rows, cols, rng)
    out = np.empty((rows, cols), np.float32)
    lib.sl_dequant(kind, ptr(data), rows, cols, ptr(out), 2)
    want = reference(kind, data, cols)
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
    half = np.empty((rows, cols), np.uint16)
    lib.sl_dequant_bf16(kind, ptr(data), rows, cols, ptr(half), 2)
    as_torch = torch.from_numpy(want).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(half, as_torch)


@pytest.mark.parametrize("kind", QUANTIZED + FLOATS, ids=lambda k: native.TYPE_NAMES[k])
@pytest.mark.parametrize("n", [1, 3, 8, 11])
def test_matmul_matches_numpy_on_the_dequantized_weights(lib, kind, n):
    rng = np.random.default_rng(100 + kind)
    rows, cols = 37, 512
    data = blocks(kind, rows, cols, rng)
    bias = rng.normal(0, 0.1, rows).astype(np.float32)
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    y = np.full((n, rows), np.nan, np.float32)
    m = matrix(kind, data, cols, bias)
    lib.sl_matmul(ctypes.byref(m), ptr(x), n, ptr(y), 2)
    want = x @ reference(kind, data, cols).T + bias
    # 8-bit activations (quantized types) cost ~1% of a typical output; a wrong layout costs ~100%
    tolerance = 0.03 if kind in QUANTIZED else 1e-4
    assert np.abs(y - want).max() <= tolerance * np.abs(want).max()


@pytest.mark.parametrize("kind", QUANTIZED, ids=lambda k: native.TYPE_NAMES[k])
@pytest.mark.parametrize("n", [1, 4])
def test_matmul_at_odd_widths(lib, kind, n):
    """Rows whose block count is odd and not a multiple of 16 (the 512-bit kernels take blocks in
    pairs, and Q8_0's sums 16 at a time): 800 wide (25 blocks), or 768 (3 super-blocks)."""
    rng = np.random.default_rng(200 + kind)
    rows, cols = 21, 768 if native.block_size(kind) == 256 else 800
    data = blocks(kind, rows, cols, rng)
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    y = np.full((n, rows), np.nan, np.float32)
    lib.sl_matmul(ctypes.byref(matrix(kind, data, cols)), ptr(x), n, ptr(y), 2)
    want = x @ reference(kind, data, cols).T
    assert np.abs(y - want).max() <= 0.03 * np.abs(want).max()


@pytest.mark.parametrize("kind", [native.Q4_1, native.Q8_0], ids=lambda k: native.TYPE_NAMES[k])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("cols", [576, 608])
def test_exact_rows_take_fp32_inputs(lib, kind, n, cols):
    """EXACT Q4_1/Q8_0 rows (the default model's packs) multiply unrounded fp32 inputs: numpy's
    result to fp32 rounding, not 8-bit activations' ~1% (608: an odd number of blocks). 23 rows
    in chunks of 16: groups of 4 (2 above batch 4) and single rows at the end of each chunk."""
    rng = np.random.default_rng(300 + kind + cols)
    rows = 23
    data = blocks(kind, rows, cols, rng)
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    y = np.full((n, rows), np.nan, np.float32)
    bias = rng.normal(0, 1, rows).astype(np.float32)
    m = matrix(kind, data, cols, bias)
    m.flags = native.EXACT
    lib.sl_matmul(ctypes.byref(m), ptr(x), n, ptr(y), 2)
    want = x.astype(np.float64) @ reference(kind, data, cols).T.astype(np.float64) + bias
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def tiled(lib, kind: int, data: np.ndarray, cols: int) -> np.ndarray | None:
    """`data`'s rows in sl_tile's 16-row tiles, or None where this build has no tiled kernels."""
    tiles = np.full_like(data, 0xAA)
    return tiles if lib.sl_tile(kind, data.shape[0], cols, ptr(data), ptr(tiles)) else None


@pytest.mark.parametrize("kind", [native.Q4_1, native.Q8_0], ids=lambda k: native.TYPE_NAMES[k])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("cols", [576, 608])
def test_tiled_exact_rows_take_fp32_inputs(lib, kind, n, cols):
    """The same matrices repacked in 16-row tiles (the AVX2 and AVX-512 builds' layout for the
    default model): as close to numpy in fp64 as the GGUF rows are, any batch. 3 groups of 16 rows: on
    one thread two go together and one alone, on two threads (chunks of 16) each goes alone."""
    rng = np.random.default_rng(400 + kind + cols)
    rows = 48
    data = blocks(kind, rows, cols, rng)
    tiles = tiled(lib, kind, data, cols)
    if tiles is None:
        assert lib.sl_isa().decode() not in ("avx2", "avx512vnni")
        pytest.skip(f"no tiled kernels in the {lib.sl_isa().decode()} build")
    assert not np.array_equal(tiles, data) and np.array_equal(np.sort(tiles, None), np.sort(data, None))
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    bias = rng.normal(0, 1, rows).astype(np.float32)
    m = matrix(kind, tiles, cols, bias)
    m.flags = native.EXACT | native.TILED
    want = x.astype(np.float64) @ reference(kind, data, cols).T.astype(np.float64) + bias
    for threads in (1, 2):
        y = np.full((n, rows), np.nan, np.float32)
        lib.sl_matmul(ctypes.byref(m), ptr(x), n, ptr(y), threads)
        assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def test_only_whole_groups_of_16_rows_tile_and_other_builds_refuse_tiles(native_builds, monkeypatch):
    """sl_tile leaves a matrix of 20 rows (or a type it has no tiles for) in GGUF rows; a build
    without the tiled kernels tiles nothing and refuses a matrix that says it is tiled (its step
    returns -1: the caller's torch path runs), rather than reading tiles as GGUF rows."""
    monkeypatch.setenv("STORYLOOM_MODELS", str(native_builds))
    rng = np.random.default_rng(9)
    for level in native.cpu_levels(cc):
        lib = native.build(cc, level)
        data = blocks(native.Q4_1, 20, 64, rng)
        assert tiled(lib, native.Q4_1, data, 64) is None
        assert tiled(lib, native.Q4_K, blocks(native.Q4_K, 16, 256, rng), 256) is None
        data = blocks(native.Q4_1, 16, 64, rng)
        tiles = tiled(lib, native.Q4_1, data, 64)
        assert (tiles is not None) == (level in ("avx2", "avx512vnni"))
        m = matrix(native.Q4_1, data, 64)
        m.flags = native.EXACT | native.TILED
        y = np.full((1, 16), np.nan, np.float32)
        lib.sl_matmul(ctypes.byref(m), ptr(np.ones((1, 64), np.float32)), 1, ptr(y), 1)
        assert np.isnan(y).all() == (tiles is None)


def test_every_level_this_cpu_runs_agrees(native_builds, monkeypatch):
    monkeypatch.setenv("STORYLOOM_MODELS", str(native_builds))
    levels = native.cpu_levels(cc)
    rng = np.random.default_rng(7)
    rows, cols, n = 19, 512, 5
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    results = {}
    for level in levels:
        lib = native.build(cc, level)
        assert lib.sl_isa().decode() == (level if level != "generic" or native._X86 else "neon")
        outs = []
        for kind in QUANTIZED + FLOATS:
            data = blocks(kind, rows, cols, np.random.default_rng(kind))
            y = np.empty((n, rows), np.float32)
            lib.sl_matmul(ctypes.byref(matrix(kind, data, cols)), ptr(x), n, ptr(y), 2)
            outs.append(y)
        results[level] = outs
    base = results[levels[0]]
    for level in levels[1:]:
        for kind, a, b in zip(QUANTIZED + FLOATS, base, results[level]):
            assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max()), (level, native.TYPE_NAMES[kind])


def test_a_level_the_cpu_cannot_run_is_refused(native_builds, monkeypatch):
    monkeypatch.setenv("STORYLOOM_MODELS", str(native_builds))
    missing = [level for level in native.LEVELS if level not in native.cpu_levels(cc)]
    monkeypatch.setenv("STORYLOOM_NATIVE_ISA", "sse9")
    with pytest.raises(RuntimeError, match="STORYLOOM_NATIVE_ISA"):
        native.build(cc)
    for level in missing:
        with pytest.raises((RuntimeError, ValueError)):
            native.build(cc, level)


# -- whole steps against a numpy forward -------------------------------------------------------
class Tiny:
    """A small random model with every optional part, weights as GGUF blocks of mixed types."""

    def __init__(self, rng, kinds, *, bias=False, qk_norm=False, neox=1, tied=False, embed=native.Q6_K,
                 heads=4, kv_heads=2, hd=64):
        self.dim, self.inter, self.heads, self.kv_heads, self.hd, self.vocab = 256, 512, heads, kv_heads, hd, 96
        self.eps, self.neox, self.keep = 1e-5, neox, []
        dim, qd, kvd = self.dim, self.heads * self.hd, self.kv_heads * self.hd
        shapes = {"q": (qd, dim), "k": (kvd, dim), "v": (kvd, dim), "o": (dim, qd),
                  "gate": (self.inter, dim), "up": (self.inter, dim), "down": (dim, self.inter)}
        self.layers = []
        for kinds_l in kinds:
            layer = {"norm1": rng.uniform(0.5, 1.5, dim).astype(np.float32),
                     "norm2": rng.uniform(0.5, 1.5, dim).astype(np.float32)}
            for (name, (rows, cols)), kind in zip(shapes.items(), kinds_l):
                data = blocks(kind, rows, cols, rng)
                b = rng.normal(0, 0.2, rows).astype(np.float32) if bias and name in "qkv" else None
                layer[name] = (kind, data, cols, b, reference(kind, data, cols))
            if qk_norm:
                layer["q_norm"] = rng.uniform(0.5, 1.5, self.hd).astype(np.float32)
                layer["k_norm"] = rng.uniform(0.5, 1.5, self.hd).astype(np.float32)
            self.layers.append(layer)
        data = blocks(embed, self.vocab, dim, rng)
        self.embed = (embed, data, dim, None, reference(embed, data, dim))
        if tied:
            self.head = self.embed
        else:
            data = blocks(native.Q8_0, self.vocab, dim, rng)
            self.head = (native.Q8_0, data, dim, None, reference(native.Q8_0, data, dim))
        self.final = rng.uniform(0.5, 1.5, dim).astype(np.float32)
        self.inv_freq = (1.0 / 10000 ** (np.arange(0, self.hd, 2) / self.hd)).astype(np.float32)

    def struct(self, threads=2) -> native.Model:
        def mat(spec):
            kind, data, cols, b, _ = spec
            return matrix(kind, data, cols, b, self.keep)
        layers = (native.Layer * len(self.layers))()
        for i, layer in enumerate(self.layers):
            layers[i].norm1, layers[i].norm2 = ptr(layer["norm1"]), ptr(layer["norm2"])
            if "q_norm" in layer:
                layers[i].q_norm, layers[i].k_norm = ptr(layer["q_norm"]), ptr(layer["k_norm"])
            for name in ("q", "k", "v", "o", "gate", "up", "down"):
                setattr(layers[i], name, mat(layer[name]))
        self.keep.append(layers)
        m = native.Model()
        m.layers, m.dim, m.intermediate = len(self.layers), self.dim, self.inter
        m.heads, m.kv_heads, m.head_dim, m.vocab, m.threads = self.heads, self.kv_heads, self.hd, self.vocab, threads
        m.eps, m.rope_neox = self.eps, self.neox
        m.embed, m.lm_head = mat(self.embed), mat(self.head)
        m.final_norm, m.inv_freq = ptr(self.final), ptr(self.inv_freq)
        m.layer = ctypes.cast(layers, ctypes.POINTER(native.Layer))
        return m

    def _norm(self, x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps))

    def _rope(self, v, pos):
        f = pos * self.inv_freq
        c, s = np.cos(f), np.sin(f)
        v = v.copy()
        if self.neox:
            a, b = v[..., : self.hd // 2].copy(), v[..., self.hd // 2:].copy()
            v[..., : self.hd // 2], v[..., self.hd // 2:] = a * c - b * s, b * c + a * s
        else:
            a, b = v[..., 0::2].copy(), v[..., 1::2].copy()
            v[..., 0::2], v[..., 1::2] = a * c - b * s, b * c + a * s
        return v

    def forward(self, seqs: np.ndarray) -> list[np.ndarray]:
        """Logits after each position of each sequence [batch, T], in float64."""
        batch, count = seqs.shape
        H, KV, hd = self.heads, self.kv_heads, self.hd
        caches = [([], []) for _ in self.layers]
        out = []
        for t in range(count):
            h = self.embed[4][seqs[:, t]].astype(np.float64)
            for layer, (ks, vs) in zip(self.layers, caches):
                x = self._norm(h, layer["norm1"])
                proj = {}
                for name in "qkv":
                    kind, data, cols, b, w = layer[name]
                    proj[name] = x @ w.T + (b if b is not None else 0)
                q = proj["q"].reshape(batch, H, hd)
                k = proj["k"].reshape(batch, KV, hd)
                if "q_norm" in layer:
                    q, k = self._norm(q, layer["q_norm"]), self._norm(k, layer["k_norm"])
                q, k = self._rope(q, t), self._rope(k, t)
                ks.append(k)
                vs.append(proj["v"].reshape(batch, KV, hd))
                K, V = np.stack(ks, 2), np.stack(vs, 2)  # [batch, KV, T, hd]
                K, V = np.repeat(K, H // KV, 1), np.repeat(V, H // KV, 1)
                scores = np.einsum("bhd,bhtd->bht", q, K) / np.sqrt(hd)
                p = np.exp(scores - scores.max(-1, keepdims=True))
                p /= p.sum(-1, keepdims=True)
                att = np.einsum("bht,bhtd->bhd", p, V).reshape(batch, H * hd)
                h = h + att @ layer["o"][4].T
                x = self._norm(h, layer["norm2"])
                g, u = x @ layer["gate"][4].T, x @ layer["up"][4].T
                h = h + (g / (1 + np.exp(-g)) * u) @ layer["down"][4].T
            out.append(self._norm(h, self.final) @ self.head[4].T)
        return out


MIXED = [[native.Q4_K, native.Q6_K, native.Q5_K, native.Q8_0, native.Q4_0, native.Q5_0, native.Q4_1],
         [native.F16, native.BF16, native.F32, native.Q6_K, native.Q4_K, native.Q4_K, native.Q6_K]]


@pytest.mark.parametrize("options", [
    dict(),  # llama from a Q4_K_M-like file: separate head
    dict(neox=0, tied=True, embed=native.Q8_0),  # GGML-normal rope, tied head
    dict(bias=True),  # qwen2
    dict(qk_norm=True, embed=native.F16),  # qwen3
], ids=["llama", "tied-normal-rope", "qwen2-bias", "qwen3-qk-norm"])
def test_decode_steps_match_a_numpy_forward(lib, options):
    rng = np.random.default_rng(3)
    tiny = Tiny(rng, MIXED, **options)
    model = tiny.struct()
    batch, count, capacity = 3, 5, 8
    seqs = rng.integers(0, tiny.vocab, (batch, count))
    want = tiny.forward(seqs)
    cache = np.zeros((len(MIXED), 2, batch, tiny.kv_heads, capacity, tiny.hd), np.float32)
    scratch = np.zeros(lib.sl_scratch_floats(ctypes.byref(model), batch, capacity), np.float32)
    for t in range(count):
        tokens = np.ascontiguousarray(seqs[:, t], dtype=np.int64)
        logits = np.full((batch, tiny.vocab), np.nan, np.float32)
        assert lib.sl_step(ctypes.byref(model), ptr(tokens), batch, t, ptr(cache), capacity, ptr(logits), ptr(scratch)) == 0
        err = np.abs(logits - want[t]).max() / np.abs(want[t]).max()
        assert err < 0.03, (t, err)
    assert (logits.argmax(-1) == want[-1].argmax(-1)).mean() >= 2 / 3


@pytest.mark.parametrize("heads, kv_heads, hd", [(12, 2, 64), (6, 2, 128), (4, 4, 64), (8, 2, 32)],
                         ids=["6-per-group", "hd128", "no-groups", "hd32"])
def test_attention_matches_a_numpy_forward_closely(lib, heads, kv_heads, hd):
    """fp32 weights, so the step's only differences from numpy are fp32 rounding: the attention's
    head groups (up to 4 at once, 6 here = 4 + 2), its four positions at a time and the positions
    past them (9), and head sizes the 512-bit path does not take (32), all to 1e-4."""
    rng = np.random.default_rng(11)
    tiny = Tiny(rng, [[native.F32] * 7] * 2, heads=heads, kv_heads=kv_heads, hd=hd, embed=native.F32)
    tiny.head = tiny.embed
    model = tiny.struct()
    batch, count, capacity = 3, 9, 12
    seqs = rng.integers(0, tiny.vocab, (batch, count))
    want = tiny.forward(seqs)
    cache = np.zeros((2, 2, batch, tiny.kv_heads, capacity, tiny.hd), np.float32)
    scratch = np.zeros(lib.sl_scratch_floats(ctypes.byref(model), batch, capacity), np.float32)
    for t in range(count):
        tokens = np.ascontiguousarray(seqs[:, t], dtype=np.int64)
        logits = np.full((batch, tiny.vocab), np.nan, np.float32)
        assert lib.sl_step(ctypes.byref(model), ptr(tokens), batch, t, ptr(cache), capacity, ptr(logits), ptr(scratch)) == 0
        assert np.abs(logits - want[t]).max() <= 1e-4 * np.abs(want[t]).max(), t


@pytest.mark.parametrize("hd", [64, 32], ids=["512-bit", "plain"])
def test_a_shared_prompt_is_read_from_row_0(lib, hd):
    """sl_step_shared: positions below `shared` come from row 0's cache for every row (the other
    rows' copies are not read: here they are NaN), with the logits of the unshared step to fp32
    rounding."""
    rng = np.random.default_rng(12)
    tiny = Tiny(rng, [[native.F32] * 7] * 2, heads=6, kv_heads=2, hd=hd, embed=native.F32)
    tiny.head = tiny.embed
    model = tiny.struct()
    batch, shared, capacity = 3, 6, 12
    prompt = rng.integers(0, tiny.vocab, shared)
    cache = np.zeros((2, 2, batch, tiny.kv_heads, capacity, tiny.hd), np.float32)
    scratch = np.zeros(lib.sl_scratch_floats(ctypes.byref(model), batch, capacity), np.float32)
    for t in range(shared):  # the prompt in every row
        tokens = np.full(batch, prompt[t], np.int64)
        logits = np.empty((batch, tiny.vocab), np.float32)
        assert lib.sl_step(ctypes.byref(model), ptr(tokens), batch, t, ptr(cache), capacity, ptr(logits), ptr(scratch)) == 0
    apart = cache.copy()
    apart[:, :, 1:, :, :shared] = np.nan
    for t in range(shared, shared + 3):
        tokens = rng.integers(0, tiny.vocab, batch).astype(np.int64)
        want = np.empty((batch, tiny.vocab), np.float32)
        assert lib.sl_step(ctypes.byref(model), ptr(tokens), batch, t, ptr(cache), capacity, ptr(want), ptr(scratch)) == 0
        got = np.empty((batch, tiny.vocab), np.float32)
        assert lib.sl_step_shared(ctypes.byref(model), ptr(tokens), batch, t, ptr(apart), capacity, ptr(got),
                                  ptr(scratch), shared) == 0
        # (the positions group in fours from 0 and from `shared`: sums in another order)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), t
    assert lib.sl_step_shared(ctypes.byref(model), ptr(tokens), batch, t, ptr(apart), capacity, ptr(got),
                              ptr(scratch), t + 1) == -1  # the step's own position is never shared
    assert lib.sl_step_shared(ctypes.byref(model), ptr(tokens), batch, t, ptr(apart), capacity, ptr(got),
                              ptr(scratch), -1) == -1


def test_the_step_refuses_what_it_cannot_run(lib):
    rng = np.random.default_rng(4)
    tiny = Tiny(rng, MIXED[:1], embed=native.Q8_0)
    model = tiny.struct()
    cache = np.zeros((1, 2, 1, tiny.kv_heads, 4, tiny.hd), np.float32)
    scratch = np.zeros(lib.sl_scratch_floats(ctypes.byref(model), 1, 4), np.float32)
    logits = np.zeros((1, tiny.vocab), np.float32)

    def step(tok=1, pos=0, batch=1):
        tokens = np.array([tok] * batch, np.int64)
        return lib.sl_step(ctypes.byref(model), ptr(tokens), batch, pos, ptr(cache), 4, ptr(logits), ptr(scratch))

    assert step() == 0
    assert step(tok=tiny.vocab) == -1 and step(tok=-1) == -1 and step(pos=4) == -1 and step(batch=9) == -1
    layer = model.layer[0]
    layer.o.cols = 128  # not what heads x head_dim needs: an out-of-bounds read if trusted
    assert step() == -1
    layer.o.cols = 256
    model.layer[0].down.type = 10  # Q2_K: not a kind the step runs
    assert step() == -1
    model.layer[0].down.type = MIXED[0][6]
    assert step() == 0
    model.embed.flags = native.EXACT | native.TILED  # its rows are read one by one, as GGUF rows: never tiled
    assert step() == -1
