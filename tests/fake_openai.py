"""A small in-process OpenAI-compatible server for the remote backend's unit tests: it can
behave like vLLM (n, echo log-probs, structured-output grammars, /tokenize) or like a bare
endpoint, fail on purpose (status codes, garbage, a dropped connection), and records requests.

Every token's log-prob is -1.0 and its likeliest alternative " said" at -0.5, the same whatever
the sampler (the model's own log-probs), unless `post_sampler` scales them by the temperature
(a server that reports what its sampler made of them)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = "the keeper lit the lamp and watched the boat come in through the rain".split()
SENTENCES = ["The keeper lit the lamp.", "The boat came in through the rain.", "Nobody on the shore waved.",
             "Gulls cried over the rocks.", "She counted the waves again."]


def tokens_of(text: str) -> list[str]:
    """Toy tokenizer: a word with its leading space is one token."""
    out, word = [], ""
    for ch in text:
        if ch == " " and word.strip():
            out.append(word)
            word = ""
        word += ch
    if word:
        out.append(word)
    return out


def logprobs_of(tokens: list[str], offsets: list[int], scale: float = 1.0) -> dict:
    """The completions API's log-probs of `tokens` (see the module docstring)."""
    return {"tokens": tokens, "token_logprobs": [-1.0 * scale] * len(tokens), "text_offset": offsets,
            "top_logprobs": [{" said": -0.5 * scale, t: -1.0 * scale} for t in tokens]}


def token_id(token: str) -> int:
    """The toy tokenizer's id of one token (stable across runs)."""
    return sum(token.encode()) * 7 % 50_000


class FakeServer:
    def __init__(self, family: str = "vllm", context: int = 4096):
        self.family = family
        self.context = context
        self.requests: list[tuple[str, dict]] = []
        self.fail: list[int] = []  # status codes to answer with, one per request, before answering
        self.garbage = False
        self.drop_after: int | None = None  # streamed chunks before the connection is cut
        self.echo_header = False  # 401 errors echo the Authorization header back (a careless server)
        self.reject: set[str] = set()  # request fields answered with 400 (a strict server)
        self.prose: int | None = None  # words of sentences (SENTENCES) each choice writes, whatever max_tokens says
        self.chunk_delay = 0.0  # seconds between streamed chunks (a server writing as it decodes)
        self.post_sampler = False
        self._streamed: list[int] = []  # pieces each stream sent before it ended or the client left
        self._ended = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.requests.append((self.path, {}))
                if self.path == "/v1/models":
                    entry = {"id": "fake-model", "object": "model"}
                    if server.family == "vllm":
                        entry["max_model_len"] = server.context
                    return self._send(200, {"object": "list", "data": [entry]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append((self.path, body))
                if self.path == "/tokenize" and server.family == "vllm":
                    toks = tokens_of(body.get("prompt", ""))
                    return self._send(200, {"count": len(toks), "max_model_len": server.context,
                                            "tokens": [token_id(t) for t in toks]})
                if self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if server.reject & set(body):
                    return self._send(400, {"error": {"message": f"unknown field {sorted(server.reject & set(body))}"}})
                if server.fail:
                    status = server.fail.pop(0)
                    message = f"busy; you sent {self.headers.get('Authorization')}" if server.echo_header else "busy"
                    return self._send(status, {"error": {"message": message}})
                if server.garbage:
                    return self._send(200, b"<html>Bad gateway</html>", "text/event-stream" if body.get("stream")
                                      else "application/json")
                self._complete(body)

            def _complete(self, body):
                prompt = body.get("prompt", "")
                if server.family != "vllm":
                    body.pop("echo", None)  # a bare endpoint: no echo, no n, no grammar
                n = int(body.get("n") or 1) if server.family == "vllm" else 1
                max_tokens = int(body.get("max_tokens") or 16)
                grammar = (body.get("structured_outputs") or {}).get("grammar") if server.family == "vllm" else None
                choices = []
                for i in range(n):
                    if grammar and '"qz7"' in grammar:
                        words = ["qz7"]
                    elif server.prose:
                        first = (i + int(body.get("seed") or 0)) % len(SENTENCES)
                        text = " ".join(SENTENCES[(first + k) % len(SENTENCES)] for k in range(server.prose))
                        words = [" " + w for w in text.split()][: server.prose]
                    else:
                        start = (len(prompt) + i + int(body.get("seed") or 0)) % len(WORDS)
                        words = [" " + WORDS[(start + k) % len(WORDS)] for k in range(max_tokens)]
                    choices.append(words)
                if body.get("stream"):
                    return self._stream(choices, body)
                out = []
                for i, words in enumerate(choices):
                    text = "".join(words)
                    choice = {"index": i, "text": (prompt + text) if body.get("echo") else text,
                              "finish_reason": "length", "logprobs": None}
                    if body.get("logprobs") is not None:
                        toks = (tokens_of(prompt) if body.get("echo") else []) + words
                        offsets, at = [], 0
                        for t in toks:
                            offsets.append(at)
                            at += len(t)
                        choice["logprobs"] = logprobs_of(toks, offsets, self._scale(body))
                    out.append(choice)
                self._send(200, {"id": "x", "object": "text_completion", "model": "fake-model", "choices": out})

            def _stream(self, choices, body):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.sent = 0
                try:
                    self._pieces(choices, body)
                except (BrokenPipeError, ConnectionResetError):  # the client closed the stream
                    self.close_connection = True
                    return
                finally:
                    with server._ended:
                        server._streamed.append(self.sent)
                        server._ended.notify_all()

            def _scale(self, body) -> float:
                return float(body.get("temperature", 1.0)) if server.post_sampler else 1.0

            def _pieces(self, choices, body):
                sent = 0
                at = [len(body.get("prompt", ""))] * len(choices)
                for k in range(max(len(w) for w in choices)):
                    for i, words in enumerate(choices):
                        if k < len(words):
                            if server.drop_after is not None and sent >= server.drop_after:
                                self.wfile.flush()
                                self.connection.shutdown(2)
                                return
                            if server.chunk_delay:
                                time.sleep(server.chunk_delay)
                            choice = {"index": i, "text": words[k], "finish_reason": None}
                            if body.get("logprobs") is not None:
                                choice["logprobs"] = logprobs_of([words[k]], [at[i]], self._scale(body))
                            at[i] += len(words[k])
                            chunk = {"id": "x", "object": "text_completion", "model": "fake-model",
                                     "choices": [choice]}
                            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                            self.wfile.flush()
                            self.sent = sent = sent + 1
                for i in range(len(choices)):
                    chunk = {"id": "x", "object": "text_completion", "model": "fake-model",
                             "choices": [{"index": i, "text": "", "finish_reason": "length"}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def spec(self) -> str:
        return f"openai:http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def streamed(self, count: int) -> list[int]:
        """The pieces each of the first `count` streams sent, once they have all ended (a handler
        learns that the client left only when its next write fails)."""
        with self._ended:
            if not self._ended.wait_for(lambda: len(self._streamed) >= count, timeout=60):
                raise AssertionError(f"only {len(self._streamed)} of {count} streams ended")
            return self._streamed[:count]

    def completions(self) -> list[dict]:
        return [body for path, body in self.requests if path == "/v1/completions"]

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
