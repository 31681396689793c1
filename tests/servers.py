"""A real OpenAI-compatible server for the remote-engine tests: llama-cpp-python's, serving the
default model's own GGUF on a free loopback port. Skips (with the reason) where it is not built."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

STAMP = Path(sys.prefix) / ".storyloom-test-server"


def why_no_server() -> str | None:
    try:
        import llama_cpp.server  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: no server here
        told = STAMP.read_text().split("\n", 1)[-1].strip() if STAMP.exists() else ""
        return (f"llama-cpp-python's server is not installed ({type(exc).__name__}: {exc}); "
                f"`python3 tasks.py test` builds it{': ' + told if told else ''}")
    return None


def _die_with_parent() -> None:
    """In the server's process before it starts: on Linux, end it when the test process ends
    (an interrupted pytest once left a server running for 25 minutes)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """Start with `with LlamaServer(gguf) as server:`; `server.spec` is the model spec to load."""

    def __init__(self, gguf: Path, n_ctx: int = 2048, extra: tuple[str, ...] = ()):
        self.gguf, self.n_ctx, self.extra = gguf, n_ctx, extra
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        return f"openai:{self.url}"

    def __enter__(self) -> "LlamaServer":
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", "2", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the test server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the test server did not answer within 90 s; see {self.log.name}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(**kwargs) -> LlamaServer:
    reason = why_no_server()
    if reason:
        print(f"\nSKIP remote-engine tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    from storyloom.engine import default_model

    return LlamaServer(default_model.gguf_file(), **kwargs).__enter__()
