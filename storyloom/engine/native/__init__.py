"""The native decoding step: decode_step.c (+ quants.c) compiled per kernel level, called through ctypes.

The C files are built with the system's C compiler into the models folder, once per level
(generic, avx2, avx512vnni; keyed by the sources' hash, the compiler and the flags), so later
runs load in milliseconds. The generic build runs anywhere and reports what the CPU can run
(sl_cpu_level); the fastest level it allows is loaded, never one the CPU lacks. Anything that
goes wrong (no compiler, a failed build, an unusual platform) makes `library()` return None with
the reason in `unavailable()`: callers then keep to the torch path.

Loading code is running code: the library is loaded only from a folder and a file owned by the
user and not writable by group or others, and only when its sha256 matches the one recorded
when it was built (a planted or truncated file is rebuilt, never loaded).

ARM: on aarch64 the levels are "generic" (sl_isa() "neon": the plain C kernels with their integer
dot products in NEON widening multiplies, which every aarch64 has) and "dotprod" ("neon-dotprod",
`-march=armv8.2-a+dotprod`: `vdotq_s32`), picked from getauxval(AT_HWCAP) & HWCAP_ASIMDDP (a
sysctl on macOS) as sl_cpu_level picks the x86 ones. tests/unit/test_native_arm.py builds both
with a cross gcc and runs them under qemu-aarch64 (scripts/cross_arm.sh fetches both from Debian's
packages without root): every type dequantizes to the host's bits and sl_matmul matches, at both
levels. Speed on real ARM hardware is not measured here (qemu says nothing about it).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "decode_step.c"       # the step and its kernels: fast-math flags
QUANTS = HERE / "quants.c"            # the exact dequantizers: strict IEEE flags (no contraction)
SAMPLE = HERE / "sample.c"            # the sampler's passes over the vocabulary: strict flags too
HEADER = HERE / "sl.h"

# ggml's type ids (gguf.GGMLQuantizationType), and each type's weights and bytes per block
F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 8, 12, 13, 14, 30
_BLOCKS = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22),
           Q8_0: (32, 34), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210)}
TYPE_NAMES = {F32: "f32", F16: "f16", BF16: "bf16", Q4_0: "q4_0", Q4_1: "q4_1", Q5_0: "q5_0",
              Q8_0: "q8_0", Q4_K: "q4_k", Q5_K: "q5_k", Q6_K: "q6_k"}

# Kernel levels, slowest first. Each is its own build with explicit flags (never -march=native):
# a home folder shared by two machines holds both builds, and each machine loads only what its
# CPU reports it can run (sl_cpu_level, asked of the generic build, which runs anywhere).
_X86 = platform.machine().lower() in ("x86_64", "amd64")
_ARM = platform.machine().lower() in ("aarch64", "arm64")
LEVELS = ("generic", "dotprod") if _ARM else ("generic", "avx2", "avx512vnni")
_LEVEL_FLAGS = {
    "generic": [],
    "dotprod": ["-march=armv8.2-a+dotprod"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-mbmi2"],
    "avx512vnni": ["-mavx2", "-mfma", "-mf16c", "-mbmi2", "-mavx512f", "-mavx512bw", "-mavx512vl",
                   "-mavx512dq", "-mavx512vnni", "-mprefer-vector-width=512"],
}

_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_why_not: str | None = None


def block_size(kind: int) -> int:
    """Weights per block of ggml type `kind` (ValueError for a type the step does not run)."""
    if kind not in _BLOCKS:
        raise ValueError(f"ggml type {kind} is not one the native step runs")
    return _BLOCKS[kind][0]


def type_bytes(kind: int) -> int:
    """Bytes per block of ggml type `kind`."""
    if kind not in _BLOCKS:
        raise ValueError(f"ggml type {kind} is not one the native step runs")
    return _BLOCKS[kind][1]


def row_bytes(kind: int, cols: int) -> int:
    return cols // block_size(kind) * type_bytes(kind)


class Matrix(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int32), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32),
                ("flags", ctypes.c_int32), ("data", ctypes.c_void_p), ("bias", ctypes.c_void_p)]


EXACT = 1  # Matrix.flags: Q4_1/Q8_0 rows times fp32 inputs (no 8-bit rounding; the packer's choice)
TILED = 2  # with EXACT: the data is in sl_tile's 16-row tiles (AVX2, AVX-512 builds), not GGUF rows


class Layer(ctypes.Structure):
    _fields_ = [("norm1", ctypes.c_void_p), ("norm2", ctypes.c_void_p), ("q_norm", ctypes.c_void_p),
                ("k_norm", ctypes.c_void_p), ("q", Matrix), ("k", Matrix), ("v", Matrix), ("o", Matrix),
                ("gate", Matrix), ("up", Matrix), ("down", Matrix)]


class Model(ctypes.Structure):
    _fields_ = [("layers", ctypes.c_int32), ("dim", ctypes.c_int32), ("intermediate", ctypes.c_int32),
                ("heads", ctypes.c_int32), ("kv_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("vocab", ctypes.c_int32), ("threads", ctypes.c_int32), ("eps", ctypes.c_float),
                ("rope_neox", ctypes.c_int32), ("embed", Matrix), ("final_norm", ctypes.c_void_p),
                ("inv_freq", ctypes.c_void_p), ("lm_head", Matrix), ("layer", ctypes.POINTER(Layer))]


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


FAST = ["-O3", "-fPIC", "-pthread", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno",
        # reassociation lets dot products vectorize, finite math lets exp's clamps vectorize
        # (nothing in the step produces or tests for inf or NaN)
        "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-ffinite-math-only"]
STRICT = ["-O2", "-fPIC", "-fopenmp", "-ffp-contract=off"]  # quants.c: rounding as numpy's


def _flags(level: str) -> list[str]:
    """The level's instruction-set flags (what the key of its build includes)."""
    if level not in LEVELS or (level != "generic" and not (_X86 or _ARM)):
        raise ValueError(f"no {level!r} build on {platform.machine()}")
    return _LEVEL_FLAGS[level]


def _target(cc: str, level: str) -> Path:
    from storyloom.paths import models_dir

    sources = SOURCE.read_bytes() + QUANTS.read_bytes() + SAMPLE.read_bytes() + HEADER.read_bytes()
    key = hashlib.sha256(
        sources + " ".join([cc, *FAST, *STRICT, *_flags(level), sys.platform, platform.machine()]).encode()
    ).hexdigest()[:16]
    return models_dir() / "native" / f"decode_step-{level}-{key}.so"


def untrusted(path: Path) -> str | None:
    """Why code or caches at `path` must not be loaded (None when they may): it must be ours,
    a plain file or folder (no symlink), and not writable by group or others."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path} cannot be checked ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"{path} belongs to another user"
    if st.st_mode & 0o022:
        return f"{path} is writable by other users"
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hash_file(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def verified(target: Path) -> str | None:
    """Why `target` may not be loaded (None when it may): trusted, and its bytes the build's."""
    if not target.exists():
        return f"{target.name} is not built yet"
    why = untrusted(target) or untrusted(_hash_file(target))
    if why:
        return why
    try:
        if _hash_file(target).read_text().strip() != _digest(target):
            return f"{target.name} does not match the hash recorded when it was built"
    except OSError as exc:
        return f"{target.name} cannot be read ({exc.strerror or exc})"
    return None


def _compile(cc: str, level: str, out: Path, openmp: bool = True) -> subprocess.CompletedProcess:
    """decode_step.c, quants.c and sample.c, each on its own flags, linked into `out`."""
    arch = _flags(level)
    def strip(flags):
        return flags if openmp else [f for f in flags if f != "-fopenmp"]
    steps = [[cc, *strip(FAST), *arch, "-c", str(SOURCE), "-o", str(out) + ".step.o"],
             [cc, *strip(STRICT), *arch, "-c", str(QUANTS), "-o", str(out) + ".quants.o"],
             [cc, *strip(STRICT), *arch, "-c", str(SAMPLE), "-o", str(out) + ".sample.o"],
             [cc, "-shared", "-pthread", *strip(["-fopenmp"]), str(out) + ".step.o", str(out) + ".quants.o",
              str(out) + ".sample.o", "-o", str(out), "-lm"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return done
    return done


def _build(cc: str, level: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a killed build never leaves a half-written library.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        done = _compile(cc, level, out)
        if done.returncode != 0:  # e.g. Apple's clang has no OpenMP: one thread is still far faster
            done = _compile(cc, level, out, openmp=False)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip()[-800:] or f"{cc} failed")
        os.chmod(out, 0o700)
        record = Path(tmp) / "hash"
        record.write_text(_digest(out) + "\n")
        os.chmod(record, 0o600)
        os.replace(out, target)
        os.replace(record, _hash_file(target))


def _signatures(lib: ctypes.CDLL) -> ctypes.CDLL:
    P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    M = ctypes.POINTER(Model)
    lib.sl_step.restype = ctypes.c_int
    lib.sl_step.argtypes = [M, P, I, I, P, I, P, P]
    lib.sl_step_shared.restype = ctypes.c_int
    lib.sl_step_shared.argtypes = [M, P, I, I, P, I, P, P, I]
    lib.sl_step_rows.restype = ctypes.c_int
    lib.sl_step_rows.argtypes = [M, P, I, P, I, I, P, I, P, P, I]
    lib.sl_scratch_floats.restype = ctypes.c_long
    lib.sl_scratch_floats.argtypes = [M, I, I]
    lib.sl_dequant.argtypes = [I, P, L, L, P, I]
    lib.sl_dequant_bf16.argtypes = [I, P, L, L, P, I]
    lib.sl_matmul.argtypes = [ctypes.POINTER(Matrix), P, I, P, I]
    lib.sl_norm_bf16.argtypes = [P, P, I, I, ctypes.c_float, P, I]
    lib.sl_add_bf16.argtypes = [P, P, L, I]
    lib.sl_rope_split.argtypes = [P, I, I, P, P, I, I, I, P, P, P, P, P, I, I, I]
    lib.sl_head.argtypes = [M, P, I, P]
    lib.sl_top_k.restype = lib.sl_logprobs.restype = ctypes.c_int
    lib.sl_top_k.argtypes = [P, L, I, I, P, I, P, L, I, ctypes.c_float, ctypes.c_float, I, P, P, P]
    lib.sl_logprobs.argtypes = [P, L, I, I, P, P]
    lib.sl_tile.restype = ctypes.c_int
    lib.sl_tile.argtypes = [I, I, I, P, P]
    for name in ("sl_dequant", "sl_dequant_bf16", "sl_matmul", "sl_norm_bf16", "sl_add_bf16",
                 "sl_rope_split", "sl_head"):
        getattr(lib, name).restype = None
    lib.sl_isa.restype = ctypes.c_char_p
    lib.sl_isa.argtypes = []
    lib.sl_cpu_level.restype = ctypes.c_int
    lib.sl_cpu_level.argtypes = []
    lib.sl_sizeof.restype = ctypes.c_long
    lib.sl_sizeof.argtypes = [I]
    return lib


def _load(cc: str, level: str) -> ctypes.CDLL:
    """Build `level` (once) and load it, only ever from a trusted folder and a verified file."""
    from storyloom.paths import private_dir

    target = _target(cc, level)
    private_dir(target.parent)
    why = untrusted(target.parent) or untrusted(target.parent.parent)
    if why:
        raise RuntimeError(f"not loading code from {target.parent}: {why}")
    if verified(target) is not None:  # not built, or not what we built: build it (again)
        if target.is_symlink() or target.exists() and untrusted(target):
            target.unlink()
        _build(cc, level, target)
        why = verified(target)
        if why:
            raise RuntimeError(f"the library just built cannot be trusted: {why}")
    return _signatures(ctypes.CDLL(str(target)))


def cpu_levels(cc: str) -> list[str]:
    """The levels this CPU can run, slowest first (asked of the generic build)."""
    best = _load(cc, "generic").sl_cpu_level()
    return list(LEVELS[: best + 1]) if _X86 or _ARM else ["generic"]


def build(cc: str, level: str | None = None) -> ctypes.CDLL:
    """Build (once) and load the fastest level this CPU runs, or `level` (the tests' variants;
    RuntimeError if this CPU cannot run it). STORYLOOM_NATIVE_ISA picks a lower level."""
    import torch  # noqa: F401  (its OpenMP runtime is loaded first and shared by the library)

    runs = cpu_levels(cc)
    wanted = level or os.environ.get("STORYLOOM_NATIVE_ISA", "").strip() or runs[-1]
    if wanted not in LEVELS:
        raise RuntimeError(f"STORYLOOM_NATIVE_ISA must be one of {', '.join(LEVELS)}, not {wanted!r}")
    if wanted not in runs:
        raise RuntimeError(f"this CPU cannot run the {wanted} kernels (it runs {', '.join(runs)})")
    lib = _load(cc, wanted)
    if level is None:  # builds of older sources go; every level of these sources stays
        keep = {p for lv in (LEVELS if _X86 or _ARM else ("generic",))
                for p in (_target(cc, lv), _hash_file(_target(cc, lv)))}
        for old in _target(cc, "generic").parent.glob("decode_step-*.so*"):
            if old not in keep:
                old.unlink(missing_ok=True)
    return lib


def isa() -> str:
    """The kernel level the loaded step runs ("avx512vnni", "avx2", "generic", "neon"), or
    "none" when the native step is unavailable."""
    lib = library()
    return lib.sl_isa().decode() if lib is not None else "none"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, for its allocator settings; None elsewhere (macOS, musl), where they are skipped."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed blocks instead of returning them to the system.

    A prompt's activations are a few MB per matmul; above glibc's default mmap threshold each is
    a fresh mapping, zeroed by the kernel page by page, then unmapped: ~8 ms of page faults in a
    500-token prompt (PyTorch's CPU guide suggests jemalloc/tcmalloc for the same reason)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD


def release_free_memory() -> None:
    """Hand the heap's free memory back to the system (after packing's temporaries, which the
    settings above would otherwise keep)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def library() -> ctypes.CDLL | None:
    """The compiled step (built on first use), or None when it cannot be had here."""
    global _loaded, _why_not
    with _lock:
        if _loaded is not None or _why_not is not None:
            return _loaded
        if os.environ.get("STORYLOOM_NATIVE", "1") == "0":
            _why_not = "turned off by STORYLOOM_NATIVE=0"
            return None
        cc = compiler()
        if cc is None:
            _why_not = "no C compiler (cc, gcc or clang) on PATH"
            return None
        try:
            lib = build(cc)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _why_not = f"the native step did not build: {exc}"
            return None
        _keep_freed_memory()
        _loaded = lib
        return lib


def unavailable() -> str | None:
    """Why the native step is not in use (None when it is, or has not been asked for yet)."""
    return _why_not
