"""A .gguf file's header, and what the native step makes of it.

`read(path)` gives the metadata (without the tokenizer's big arrays) and the tensor table: where
each tensor's blocks lie in the file. The first read parses the file with gguf-py's GGUFReader
(about a second for a 50k-token vocabulary, longer for Llama 3's 128k); the result is cached as
JSON in the models folder, keyed by the file's path, size and modification time, so later loads
read a few kB. Every table, cached or fresh, is checked against the file before use: a tensor
that would reach past the end of the file, or a size that does not match its type and shape, is
a broken file (fresh) or a cache to rebuild (cached), never a pointer handed to C.

`plan(header)` says whether the native step can run the model (llama, mistral, qwen2, qwen3 in
the GGUF block types the kernels read) and with which shapes, or why not.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEADER_FORMAT = 1  # bump when the cached JSON changes shape

# ggml type id: (name, elements per block, bytes per block); the types the native step reads
TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 8: ("Q8_0", 32, 34), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2),
}
F32, F16, BF16 = 0, 1, 30
ARCHS = ("llama", "mistral", "qwen2", "qwen3")


class GGUFError(ValueError):
    """The file is not a GGUF this engine can read (a sentence for the user)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: int
    shape: tuple[int, ...]  # GGUF order: shape[0] (ne0) is the row length (a matrix's inputs)
    offset: int             # absolute, in bytes from the start of the file
    nbytes: int

    @property
    def rows(self) -> int:
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n

    @property
    def cols(self) -> int:
        return self.shape[0]

    @property
    def type_name(self) -> str:
        return TYPES[self.type][0] if self.type in TYPES else f"type {self.type}"


@dataclass
class Header:
    path: Path
    size: int
    meta: dict
    tensors: dict[str, TensorInfo]
    source: str = "file"  # or "cache"

    def get(self, key: str, default=None):
        return self.meta.get(key, default)

    @property
    def arch(self) -> str:
        return str(self.meta.get("general.architecture", ""))


@dataclass(frozen=True)
class Plan:
    """The shapes the native step is built with."""

    arch: str
    layers: int
    dim: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    eps: float
    rope_theta: float
    rope_neox: bool            # halves (qwen); adjacent pairs for llama/mistral (rows permuted)
    rope_factors: str | None   # the rope_freqs tensor (Llama 3 scaling), divides the frequencies
    rope_linear: float         # rope.scaling.type linear: positions divided by this
    context_length: int
    tied: bool                 # no output.weight: the embedding is the head
    biases: bool               # qwen2's q/k/v biases
    qk_norm: bool              # qwen3's per-head q/k RMS norms
    kinds: dict = field(default_factory=dict, compare=False)  # type name -> matrices

    def describe(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items(), key=lambda kv: -kv[1]))
        return (f"{self.arch}, {self.layers} layers, {self.dim} wide, {self.heads}/{self.kv_heads} heads, "
                f"vocab {self.vocab}{', tied head' if self.tied else ''} ({parts})")


# -- reading ---------------------------------------------------------------------------------
_SKIP = re.compile(r"^tokenizer\.ggml\.(tokens|token_type|scores|merges)$|^tokenizer\.huggingface\.json$")


def _plain(value):
    """numpy scalars and arrays as JSON-able Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _parse(path: Path) -> Header:
    """The header by gguf-py (the slow, authoritative way)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # a dependency of transformers' GGUF support: normally present
        raise GGUFError("reading GGUF files needs the `gguf` package (pip install gguf)") from exc
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise GGUFError(f"{path.name} is damaged or truncated: gguf-py cannot read it ({exc})") from None
    meta = {}
    for key, f in reader.fields.items():
        if key == "tokenizer.ggml.tokens":
            meta["storyloom.token_count"] = len(f.data)  # the array itself is not kept
        if key.startswith("GGUF.") or _SKIP.match(key):
            continue
        try:
            meta[key] = _plain(f.contents())
        except (ValueError, IndexError, UnicodeDecodeError):
            continue
    tensors = {}
    for t in reader.tensors:
        tensors[t.name] = TensorInfo(t.name, int(t.tensor_type), tuple(int(d) for d in t.shape),
                                     int(t.data_offset), int(t.n_bytes))
    return Header(path, path.stat().st_size, meta, tensors)


def problem(header: Header) -> str | None:
    """Why this tensor table cannot be trusted for this file (None when every tensor lies inside
    the file with the size its type and shape imply)."""
    for t in header.tensors.values():
        if t.type not in TYPES:
            continue  # not readable natively; plan() says so by name
        _, block, type_bytes = TYPES[t.type]
        if not t.shape or any(d <= 0 for d in t.shape) or t.shape[0] % block:
            return f"tensor {t.name} has shape {list(t.shape)}, which {t.type_name} blocks cannot hold"
        want = t.rows * (t.cols // block) * type_bytes
        if t.nbytes != want:
            return f"tensor {t.name} is {t.nbytes} bytes, not the {want} its shape needs"
        if t.offset < 0 or t.offset + t.nbytes > header.size:
            return f"tensor {t.name} reaches past the end of the file (truncated?)"
    return None


def cache_dir(path: Path) -> Path:
    """This file's folder for derived things (header, tokenizer): keyed by path, size, mtime."""
    from storyloom.paths import models_dir

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = re.sub(r"[^\w.-]", "_", path.stem)[:60]
    return models_dir() / "gguf-native" / f"{stem}-{key}"


def trusted_cache(folder: Path, *names: str) -> bool:
    """May caches in `folder` be read? It and the files named must be the user's own, plain, and
    not writable by others (see native.untrusted): a planted cache would steer what we load."""
    from storyloom.engine.native import untrusted

    for p in (folder.parent, folder, *(folder / n for n in names)):
        why = untrusted(p)
        if why:
            if p.exists():
                log.warning("not using the cache %s: %s", p, why)
            return False
    return True


def _from_cache(path: Path, file: Path) -> Header | None:
    if not file.is_file() or not trusted_cache(file.parent, file.name):
        return None
    try:
        data = json.loads(file.read_text())
        if data.get("format") != HEADER_FORMAT:
            return None
        tensors = {name: TensorInfo(name, int(t[0]), tuple(int(d) for d in t[1]), int(t[2]), int(t[3]))
                   for name, t in data["tensors"].items()}
        return Header(path, path.stat().st_size, dict(data["meta"]), tensors, source="cache")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        log.info("header cache %s unreadable (%s); reading the file again", file, exc)
        return None


def _write_cache(header: Header, file: Path) -> None:
    from storyloom.paths import atomic_write, private_dir

    try:
        private_dir(file.parent.parent)
        private_dir(file.parent)
        data = {"format": HEADER_FORMAT, "meta": header.meta,
                "tensors": {n: [t.type, list(t.shape), t.offset, t.nbytes] for n, t in header.tensors.items()}}
        atomic_write(file, json.dumps(data).encode(), force=True)
    except OSError as exc:  # an optimisation only: the next load parses the file again
        log.warning("could not write the header cache %s (%s)", file, exc)


def read(path: Path | str, use_cache: bool = True) -> Header:
    """The header of `path`: from the cache when it is there, trusted and consistent with the
    file, else parsed (and cached). A file that fails the checks raises GGUFError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise GGUFError(f"cannot read {path} ({exc.strerror or exc})") from None
    if magic != b"GGUF":
        raise GGUFError(f"{path.name} is not a GGUF file (it does not start with 'GGUF')")
    cached_file = cache_dir(path) / "header.json" if use_cache else None
    if cached_file is not None:
        header = _from_cache(path, cached_file)
        if header is not None:
            why = problem(header) or _plan_problem(header)
            if why is None:
                return header
            log.warning("header cache %s does not fit %s (%s); rebuilding it", cached_file, path.name, why)
    header = _parse(path)
    why = problem(header)
    if why:
        raise GGUFError(f"{path.name} is damaged: {why}")
    if cached_file is not None:
        _write_cache(header, cached_file)
    return header


def _plan_problem(header: Header) -> str | None:
    """A cached header must give the same answer as the file would: shapes that do not add up
    (plan() refusing a model for a reason other than its kind) mean a bad cache."""
    result = plan(header)
    return result if isinstance(result, str) and result.startswith("malformed") else None


# -- what the native step makes of it --------------------------------------------------------
def _int(header: Header, key: str, default=None):
    value = header.get(key, default)
    if isinstance(value, list):
        return None if len(set(value)) != 1 else int(value[0])  # per-layer counts: only if all equal
    return int(value) if value is not None else None


def plan(header: Header) -> Plan | str:
    """The native plan, or a one-line reason it cannot run this model (the transformers path then)."""
    arch = header.arch
    if arch not in ARCHS:
        return f"architecture {arch or '?'!r} is not one the native step runs ({', '.join(ARCHS)})"
    a = arch
    if header.get(f"{a}.expert_count"):
        return f"a mixture of experts ({header.get(f'{a}.expert_count')} experts)"
    layers = _int(header, f"{a}.block_count")
    dim = _int(header, f"{a}.embedding_length")
    ffn = _int(header, f"{a}.feed_forward_length")
    heads = _int(header, f"{a}.attention.head_count")
    kv = _int(header, f"{a}.attention.head_count_kv", heads)
    if None in (layers, dim, ffn, heads, kv) or min(layers, dim, ffn, heads, kv) <= 0:
        return "malformed: the block count, widths or head counts are missing or vary by layer"
    if heads % kv:
        return f"malformed: {heads} attention heads cannot share {kv} key/value heads"
    head_dim = _int(header, f"{a}.attention.key_length") or dim // heads
    if (_int(header, f"{a}.attention.value_length") or head_dim) != head_dim:
        return "keys and values of different widths"
    if head_dim % 2 or (not header.get(f"{a}.attention.key_length") and dim % heads):
        return f"malformed: a width of {dim} does not split into {heads} heads"
    rope_dims = _int(header, f"{a}.rope.dimension_count") or head_dim
    if rope_dims != head_dim:
        return f"partial rotary embedding ({rope_dims} of {head_dim} dimensions)"
    scaling = str(header.get(f"{a}.rope.scaling.type", "none") or "none")
    factor = float(header.get(f"{a}.rope.scaling.factor", 1.0) or 1.0)
    if scaling not in ("none", "linear") and not (scaling == "yarn" and factor == 1.0):
        return f"rope scaling {scaling!r}"
    t = header.tensors
    embed = t.get("token_embd.weight")
    if embed is None:
        return "malformed: no token_embd.weight"
    vocab = embed.rows
    out = t.get("output.weight")
    want: dict[str, tuple[int, ...]] = {"token_embd.weight": (dim, vocab), "output_norm.weight": (dim,)}
    if out is not None:
        want["output.weight"] = (dim, vocab)
    q_size, kv_size = heads * head_dim, kv * head_dim
    qwen2, qwen3 = arch == "qwen2", arch == "qwen3"
    for i in range(layers):
        p = f"blk.{i}."
        want.update({p + "attn_norm.weight": (dim,), p + "ffn_norm.weight": (dim,),
                     p + "attn_q.weight": (dim, q_size), p + "attn_k.weight": (dim, kv_size),
                     p + "attn_v.weight": (dim, kv_size), p + "attn_output.weight": (q_size, dim),
                     p + "ffn_gate.weight": (dim, ffn), p + "ffn_up.weight": (dim, ffn),
                     p + "ffn_down.weight": (ffn, dim)})
        if qwen2:
            want.update({p + "attn_q.bias": (q_size,), p + "attn_k.bias": (kv_size,), p + "attn_v.bias": (kv_size,)})
        if qwen3:
            want.update({p + "attn_q_norm.weight": (head_dim,), p + "attn_k_norm.weight": (head_dim,)})
    kinds: dict[str, int] = {}
    for name, shape in want.items():
        have = t.get(name)
        if have is None:
            return f"malformed: tensor {name} is missing"
        if have.shape != shape:
            return f"malformed: tensor {name} is {list(have.shape)}, not {list(shape)}"
        if have.type not in TYPES:
            return f"tensor {name} is {have.type_name}, a block type the native step does not read"
        if len(shape) == 1 and have.type not in (F32, F16, BF16):
            return f"tensor {name} is {have.type_name}; norms and biases must be F32, F16 or BF16"
        if len(shape) == 2:
            kinds[have.type_name] = kinds.get(have.type_name, 0) + 1
    known = set(want) | {"rope_freqs.weight"}
    extra = sorted(n for n in t if n not in known and not n.endswith("attn_rot_embd"))
    if extra:
        return f"tensors the native step does not use, e.g. {extra[0]}"
    factors = t.get("rope_freqs.weight")
    if factors is not None and (factors.shape != (head_dim // 2,) or factors.type != F32):
        return f"malformed: rope_freqs.weight is {list(factors.shape)} {factors.type_name}"
    neox = arch in ("qwen2", "qwen3")
    return Plan(
        arch=arch, layers=layers, dim=dim, intermediate=ffn, heads=heads, kv_heads=kv, head_dim=head_dim,
        vocab=vocab, eps=float(header.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(header.get(f"{a}.rope.freq_base", 10000.0)), rope_neox=neox,
        rope_factors="rope_freqs.weight" if factors is not None else None,
        rope_linear=factor if scaling == "linear" else 1.0,
        context_length=_int(header, f"{a}.context_length") or 2048,
        tied=out is None, biases=qwen2, qk_norm=qwen3, kinds=kinds)


def file_size_mb(path: Path | str) -> float:
    return round(os.path.getsize(path) / 2**20, 1)
