"""Each token's bytes, for tokenizers whose decoding is only those bytes joined (byte-level BPE:
GPT-2's, SmolLM2's): a row's text grows by appending one token's bytes, where asking the
tokenizer decodes the whole row again every token (0.07 ms a row per step at 4 candidates).

`pieces(tokenizer)` is None for anything else (a SentencePiece decoder, text clean-up), and for
a tokenizer whose own decoding of a few samples these bytes do not reproduce exactly.
"""
from __future__ import annotations

import functools
import json
import logging

log = logging.getLogger(__name__)

# Text whose tokens split characters of every UTF-8 length (checked whole and cut after every token).
SAMPLES = ("The keeper said: \"Ahoy!\"\n\nNobody answered.", "café naïve façade, Zoë's jalapeño",
           "日本語のテキスト、中文字符", "emoji 🌊🐚 and ∑ symbols ≠ ≤ 'quotes' — dashes…")


@functools.cache
def byte_chars() -> tuple[str, ...]:
    """GPT-2's bytes_to_unicode: the printable character standing for each byte, in byte order
    (a byte-level BPE vocabulary starts from these 256 symbols)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return tuple(chr(c) for _, c in sorted(zip(printable, chars)))


@functools.cache
def _byte_of_char() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_chars())}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return False
    try:
        return json.loads(backend.decoder.__getstate__()).get("type") == "ByteLevel"
    except (TypeError, ValueError, AttributeError):
        return False


def pieces(tokenizer) -> list[bytes] | None:
    """Each id's bytes (b"" for a special token, which decoding skips), or None where joining
    them is not how this tokenizer decodes."""
    if not _is_byte_level(tokenizer):
        return None
    table = _byte_of_char()
    special = set(getattr(tokenizer, "all_special_ids", ()))  # and every added token marked special
    special |= {i for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items() if getattr(t, "special", False)}
    out = []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in special or token is None:
            out.append(b"")
        elif all(ch in table for ch in token):
            out.append(bytes(table[ch] for ch in token))
        else:  # an added token outside the byte alphabet decodes as its own text
            out.append(token.encode("utf-8"))
    # the samples cut after every token, and each added token (special or not) beside a word
    checks = [ids[:end] for sample in SAMPLES
              for ids in [tokenizer(sample, add_special_tokens=False)["input_ids"]] for end in range(1, len(ids) + 1)]
    word = tokenizer(" word", add_special_tokens=False)["input_ids"]
    checks += [[i, *word] for i in (getattr(tokenizer, "added_tokens_decoder", None) or {})]
    for ids in checks:
        if join(out, ids) != tokenizer.decode(ids, skip_special_tokens=True):
            log.info("the tokenizer does not decode as its tokens' bytes joined: decoding whole rows")
            return None
    return out


def join(table: list[bytes], ids) -> str:
    """The text of `ids` (a character cut at the end shows as U+FFFD, as the tokenizer's does)."""
    return b"".join(table[i] for i in ids).decode("utf-8", "replace")
