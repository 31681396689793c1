"""The native decoding step: decode_step.c compiled once per machine and called through ctypes.

The C file is built with the system's C compiler into the models folder (keyed by the source's
hash, the compiler and the CPU), so later runs load it in milliseconds. Anything that goes wrong
(no compiler, a failed build, an unusual platform) makes `library()` return None with the reason
in `unavailable()`: callers then keep to the torch path.

Loading code is running code: the library is loaded only from a folder and a file owned by the
user and not writable by group or others, and only when its sha256 matches the one recorded
when it was built (a planted or truncated file is rebuilt, never loaded).
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

SOURCE = Path(__file__).with_name("decode_step.c")
GROUP = 32
Q4_1, Q8_0, F32 = 0, 1, 2

_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_why_not: str | None = None


class Matrix(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32),
                ("half_scales", ctypes.c_int32), ("q", ctypes.c_void_p), ("scale", ctypes.c_void_p),
                ("minv", ctypes.c_void_p)]


class Layer(ctypes.Structure):
    _fields_ = [("norm1", ctypes.c_void_p), ("norm2", ctypes.c_void_p), ("qkv", Matrix), ("o", Matrix),
                ("gate_up", Matrix), ("down", Matrix)]


class Model(ctypes.Structure):
    _fields_ = [("layers", ctypes.c_int32), ("dim", ctypes.c_int32), ("intermediate", ctypes.c_int32),
                ("heads", ctypes.c_int32), ("kv_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("vocab", ctypes.c_int32), ("threads", ctypes.c_int32), ("eps", ctypes.c_float),
                ("pad", ctypes.c_int32), ("embed", ctypes.c_void_p), ("final_norm", ctypes.c_void_p),
                ("inv_freq", ctypes.c_void_p), ("lm_head", Matrix), ("layer", ctypes.POINTER(Layer))]


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _flags(arch: list[str] | None = None) -> list[str]:
    """Compiler flags; `arch` replaces the default of this CPU's own instruction set."""
    flags = ["-O3", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno",
             # reassociation lets dot products vectorize, finite math lets exp's clamps vectorize
             # (nothing here produces or tests for inf or NaN)
             "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-ffinite-math-only"]
    if arch is not None:
        return flags + arch
    if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        x86 = platform.machine().lower() in ("x86_64", "amd64")
        flags += ["-march=native", "-mprefer-vector-width=512"] if x86 else ["-mcpu=native"]
    return flags


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor()


def _target(cc: str, flags: list[str]) -> Path:
    from storyloom.paths import models_dir

    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join([cc, *flags, _cpu_id(), sys.platform]).encode()
    ).hexdigest()[:16]
    return models_dir() / "native" / f"decode_step-{key}.so"


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


def _build(cc: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a killed build never leaves a half-written library.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        done = subprocess.run([cc, *flags, str(SOURCE), "-o", str(out), "-lm"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:  # e.g. Apple's clang has no OpenMP: one thread is still far faster
            flags = [f for f in flags if f != "-fopenmp"]
            done = subprocess.run([cc, *flags, str(SOURCE), "-o", str(out), "-lm"],
                                  capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip()[-800:] or f"{cc} failed")
        os.chmod(out, 0o700)
        record = Path(tmp) / "hash"
        record.write_text(_digest(out) + "\n")
        os.chmod(record, 0o600)
        os.replace(out, target)
        os.replace(record, _hash_file(target))


def build(cc: str, arch: list[str] | None = None) -> ctypes.CDLL:
    """Build (once) and load the library for this CPU, or for `arch` flags (the tests' variants)."""
    import torch  # noqa: F401  (its OpenMP runtime is loaded first and shared by the library)

    from storyloom.paths import private_dir

    flags = _flags(arch)
    target = _target(cc, flags)
    private_dir(target.parent)
    why = untrusted(target.parent) or untrusted(target.parent.parent)
    if why:
        raise RuntimeError(f"not loading code from {target.parent}: {why}")
    if verified(target) is not None:  # not built, or not what we built: build it (again)
        if target.is_symlink() or target.exists() and untrusted(target):
            target.unlink()
        _build(cc, flags, target)
        if arch is None:
            for old in target.parent.glob("decode_step-*.so*"):  # older sources, other CPUs
                if old not in (target, _hash_file(target)):
                    old.unlink(missing_ok=True)
        why = verified(target)
        if why:
            raise RuntimeError(f"the library just built cannot be trusted: {why}")
    lib = ctypes.CDLL(str(target))
    P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    M = ctypes.POINTER(Model)
    lib.sl_step.restype = ctypes.c_int
    lib.sl_step.argtypes = [M, P, I, I, P, I, P, P]
    lib.sl_scratch_floats.restype = ctypes.c_long
    lib.sl_scratch_floats.argtypes = [M, I, I]
    lib.sl_norm_bf16.argtypes = [P, P, I, I, ctypes.c_float, P, I]
    lib.sl_add_bf16.argtypes = [P, P, L, I]
    lib.sl_rope_split.argtypes = [P, I, I, P, P, I, I, I, P, P, P, P, P, I, I]
    lib.sl_head.argtypes = [M, P, I, P]
    for name in ("sl_norm_bf16", "sl_add_bf16", "sl_rope_split", "sl_head"):
        getattr(lib, name).restype = None
    return lib


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
