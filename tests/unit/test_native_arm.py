"""Issue 16: the kernels on aarch64 (NEON, and NEON dotprod), run under qemu-user.

Needs an aarch64 cross gcc and qemu-aarch64: on PATH, or unpacked by scripts/cross_arm.sh into
STORYLOOM_CROSS_ROOT (no root needed). Skipped without them. The harness (native/harness.c)
dequantizes random blocks of every type and checks sl_matmul against a double matmul on them; the
dequantized values' checksums must be the same bits as the host's."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from storyloom.engine import native

HARNESS = Path(__file__).with_name("native") / "harness.c"
FAST = [f for f in native.FAST if f not in ("-fPIC", "-fopenmp")]
STRICT = [f for f in native.STRICT if f not in ("-fPIC", "-fopenmp")]


def _cross() -> tuple[list[str], list[str], dict] | None:
    """(cross gcc command, qemu command, env) or None."""
    root = os.environ.get("STORYLOOM_CROSS_ROOT")
    if root:
        r = Path(root)
        gcc, qemu = r / "usr/bin/aarch64-linux-gnu-gcc-12", r / "usr/bin/qemu-aarch64-static"
        if not (gcc.exists() and qemu.exists()):
            return None
        cmd = [str(gcc), f"-B{r}/usr/lib/gcc-cross/aarch64-linux-gnu/12/",
               f"-B{r}/usr/libexec/gcc-cross/aarch64-linux-gnu/12/", f"-B{r}/usr/bin/aarch64-linux-gnu-",
               f"--sysroot={r}", "-isystem", f"{r}/usr/aarch64-linux-gnu/include",
               f"-L{r}/usr/aarch64-linux-gnu/lib", f"-B{r}/usr/aarch64-linux-gnu/lib/"]
        env = {**os.environ, "LD_LIBRARY_PATH": f"{r}/usr/lib/x86_64-linux-gnu"}
        return cmd, [str(qemu)], env
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if gcc and qemu:
        return [gcc], [qemu, "-L", "/usr/aarch64-linux-gnu"], dict(os.environ)
    return None


def _build(cc: list[str], out: Path, env: dict, static: bool, arch: tuple[str, ...] = ()) -> None:
    src = native.HERE
    steps = [[*cc, *FAST, *arch, "-c", str(native.SOURCE), "-o", f"{out}.ds.o"],
             [*cc, *STRICT, "-c", str(native.QUANTS), "-o", f"{out}.q.o"],
             [*cc, "-O2", f"-I{src}", "-c", str(HARNESS), "-o", f"{out}.h.o"],
             [*cc, *(["-static"] if static else []), "-pthread", f"{out}.h.o", f"{out}.ds.o", f"{out}.q.o",
              "-o", str(out), "-lm"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]


def test_the_kernels_run_on_aarch64_and_agree_with_the_host(tmp_path):
    cross = _cross()
    if cross is None:
        pytest.skip("no aarch64 cross compiler and qemu-user (scripts/cross_arm.sh fetches them)")
    if native.compiler() is None:
        pytest.skip("no host C compiler")
    cc, qemu, env = cross
    _build([native.compiler()], tmp_path / "host", dict(os.environ), static=False)
    host = subprocess.run([str(tmp_path / "host")], capture_output=True, text=True, timeout=600)
    assert host.returncode == 0, host.stdout
    host_lines = host.stdout.splitlines()
    # the two aarch64 levels, built as native/__init__.py builds them
    outputs = []
    for level, isa in (("generic", "neon"), ("dotprod", "neon-dotprod")):
        for contract in ((), ("-ffp-contract=off",)):
            out = tmp_path / f"arm-{level}{'-nofma' if contract else ''}"
            _build(cc, out, env, static=True, arch=(*native._LEVEL_FLAGS[level], *contract))
            arm = subprocess.run([*qemu, str(out)], capture_output=True, text=True, env=env, timeout=600)
            assert arm.returncode == 0, arm.stdout + arm.stderr
            arm_lines = arm.stdout.splitlines()
            assert arm_lines[0] == f"isa {isa}"
            assert len(arm_lines) == len(host_lines) == 11
            for a, h in zip(arm_lines[1:], host_lines[1:]):
                assert a.split()[:4] == h.split()[:4]  # type and the dequantized bits' checksum
                assert a.endswith(" ok"), a  # the matmul within its tolerance of double precision
            if contract:
                outputs.append([line.split()[:6] for line in arm_lines[1:]])
    # vdotq_s32 and the widening multiplies sum the same integers: the same matmul bits. Compared
    # without FMA contraction: under -ffast-math each -march may fuse the float sums around the
    # integer dot differently (the shipped builds differed in Q8_0's last bits), which says
    # nothing about the integer kernels.
    assert outputs[0] == outputs[1]
