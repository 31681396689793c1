"""Lorebooks in and out of the other tools' files: SillyTavern World Info JSON, KoboldAI and
KoboldCpp (Kobold Lite) world info, NovelAI `.lorebook` files; also read: the book inside a
Character Card V2/V3 JSON, and AI Dungeon's world-info list (which KoboldAI imports).

These files are hostile input: the file is checked and read with a size bound, JSON nesting
too deep for Python is one sentence, every field is type-checked as it is read, and what does
not fit StoryLoom is counted and named in the report ("mapped": kept with a feature
approximated; "dropped": not imported). Exports write each tool's own fields, plus a
`storyloom` object on each entry with the flags that tool has no field for, so a round trip
through any format keeps keys, text, order and flags.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from storyloom.store import bounded_read
from storyloom.store.lorebooks import (
    MAX_BIAS, MAX_COMMENT, MAX_ENTRIES, MAX_KEY, MAX_KEYS, MAX_NAME, MAX_ORDER, MAX_SCAN_DEPTH, MAX_TEXT, LoreError,
    Lorebook, check_name,
)
from storyloom.store.stories import LOGICS, WorldEntry

MAX_FILE_BYTES = 16 * 1024 * 1024
FORMATS = ("sillytavern", "novelai", "kobold")
ST_LOGIC = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}  # world-info.js world_info_logic
ST_POSITIONS = (0, 1)  # before / after the character: both are "with the other world info" here
NAI_DEFAULT_PRIORITY = 400
NAI_DEFAULT_RANGE = 1000  # characters of story NovelAI searches by default
_EXT = "storyloom"  # the per-entry object our exports add for what a format cannot say


@dataclass
class ImportReport:
    book: Lorebook
    format: str
    kept: int = 0
    mapped: int = 0
    dropped: int = 0
    why: Counter = field(default_factory=Counter)  # reason -> entries

    def line(self) -> str:
        why = "; ".join(f"{n} {reason}" for reason, n in self.why.most_common())
        return (f"Imported {len(self.book.entries)} entries into {self.book.name} (kept {self.kept}, "
                f"mapped {self.mapped}, dropped {self.dropped}{': ' + why if why else ''})")


# -- reading ----------------------------------------------------------------------------
def read_file(path: Path) -> bytes:
    """A regular file's bytes, refused before reading when it is not one or is too big."""
    return bounded_read.read_bounded(path, MAX_FILE_BYTES, LoreError, repr(str(path)[-80:]),
                                     "import a lorebook file (.json or .lorebook).",
                                     f"a lorebook may be at most {MAX_FILE_BYTES / 1e6:.0f} MB")


def parse(data: bytes) -> object:
    if b"\x00" in data[:4096] or data[:8] == b"\x89PNG\r\n\x1a\n":
        raise LoreError("This is a binary file, not a lorebook (SillyTavern, Kobold and NovelAI lorebooks are JSON).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LoreError("The file is not UTF-8 text, so it is not a lorebook.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise LoreError("The file nests too deeply to be a lorebook.") from None
    except json.JSONDecodeError as exc:
        raise LoreError(f"The file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None


def _character_book(data: dict) -> dict | None:
    """The lorebook inside a character card (V2/V3 JSON) or a standalone `lorebook_v3` file."""
    inner = data.get("data") if isinstance(data.get("data"), dict) else None
    if data.get("spec") == "lorebook_v3" and inner is not None:
        return inner
    if data.get("spec") in ("chara_card_v2", "chara_card_v3") and inner is not None:
        book = inner.get("character_book")
        return book if isinstance(book, dict) else None
    return None


def detect(data: object) -> str:
    if isinstance(data, dict):
        if _character_book(data) is not None and isinstance(_character_book(data).get("entries"), list):
            return "character_book"
        if "lorebookVersion" in data and isinstance(data.get("entries"), list):
            return "novelai"
        if isinstance(data.get("entries"), dict):
            return "sillytavern"
        if isinstance(data.get("worldinfo"), list) or isinstance(data.get("worldinfo_v2"), dict):
            return "kobold"
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data[:50]) and \
            any(("key" in e or "keys" in e) and ("content" in e or "entry" in e) for e in data[:50]):
        return "kobold"
    raise LoreError("This JSON is not a lorebook StoryLoom knows: expected SillyTavern World Info "
                    "({\"entries\": {...}}), Kobold world info (a list, or a save with \"worldinfo\") or a "
                    "NovelAI .lorebook ({\"lorebookVersion\": ...}) or a character card's JSON with a character_book.")


def import_bytes(data: bytes, name: str = "", fallback_name: str = "Imported lorebook") -> ImportReport:
    parsed = parse(data)
    kind = detect(parsed)
    reader = {"sillytavern": _read_sillytavern, "novelai": _read_novelai, "kobold": _read_kobold,
              "character_book": _read_character_book}[kind]
    report = ImportReport(Lorebook(name="-", source=kind), kind)
    raw_entries, title = reader(parsed, report)
    if len(raw_entries) > MAX_ENTRIES:
        raise LoreError(f"The lorebook has {len(raw_entries):,} entries; the limit is {MAX_ENTRIES:,}.")
    if not report.book.entries:
        why = "; ".join(f"{n} {reason}" for reason, n in report.why.most_common()) or "it has no entries"
        raise LoreError(f"Nothing to import from this {kind} file: {why}.")
    chosen = name.strip() or (title if isinstance(title, str) else "").strip() or fallback_name
    report.book.name = check_name(chosen[:MAX_NAME])
    return report


def import_path(path: Path, name: str = "") -> ImportReport:
    return import_bytes(read_file(path), name, fallback_name=Path(path).stem or "Imported lorebook")


# -- field readers (tolerant of what each tool writes; strict about types) --------------
class _Entry:
    """Reads one foreign entry, noting what it had to approximate (mapped) or refuse (dropped)."""

    def __init__(self, raw: dict, report: ImportReport):
        self.raw, self.report, self.mapped = raw, report, []

    def get(self, key: str, default=None):
        return self.raw.get(key, default)

    def text(self, key: str, default: str = "") -> str:
        value = self.raw.get(key, default)
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _Drop("with text that is not text")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", ""):
            return value.lower() in ("true", "1")
        raise _Drop("with a flag that is not true or false")

    def number(self, key: str, default: int | None) -> int | None:
        value = self.raw.get(key, default)
        if value is None or value == "":
            return default
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _Drop("with a number that is not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise _Drop("with a number that is not a number")
        return int(max(-MAX_ORDER, min(MAX_ORDER, value)))

    def keys(self, key: str) -> list[str]:
        value = self.raw.get(key, [])
        if value is None:
            return []
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            raise _Drop("with keys that are not a list")
        keys = []
        for k in value:
            if isinstance(k, (int, float)) and not isinstance(k, bool):
                k = str(k)
            if not isinstance(k, str):
                raise _Drop("with keys that are not text")
            if k.strip():
                keys.append(k.strip())
        if len(keys) > MAX_KEYS or any(len(k) > MAX_KEY for k in keys):
            raise _Drop(f"with more than {MAX_KEYS} keys or a key over {MAX_KEY} characters")
        return keys

    def map(self, reason: str) -> None:
        if reason not in self.mapped:
            self.mapped.append(reason)


class _Drop(Exception):
    """This entry cannot be imported; the message completes 'N entries ...'."""


def _objects(raw, report: ImportReport):
    """(position, entry) for each entry that is an object; the others are counted as dropped."""
    for position, item in enumerate(raw):
        if isinstance(item, dict):
            yield position, item
        else:
            report.dropped += 1
            report.why["dropped that are not objects"] += 1


def _add(report: ImportReport, read) -> None:
    """Run one entry reader: count it kept, mapped or dropped."""
    try:
        made = read()
    except _Drop as why:
        report.dropped += 1
        report.why[f"dropped {why}"] += 1
        return
    if made is None:
        return
    entry, mapped = made
    if not entry.text.strip() and not entry.keys:
        report.dropped += 1
        report.why["dropped as empty"] += 1
        return
    if len(entry.text) > MAX_TEXT:
        report.dropped += 1
        report.why[f"dropped with text over {MAX_TEXT:,} characters"] += 1
        return
    entry.comment = entry.comment[:MAX_COMMENT]
    report.book.entries.append(entry)
    if mapped:
        report.mapped += 1
        for reason in mapped:
            report.why[reason] += 1
    else:
        report.kept += 1


def _apply_ext(entry: WorldEntry, e: _Entry) -> None:
    """Flags our own exports stored for a format that has no field for them."""
    ext = e.get(_EXT)
    if not isinstance(ext, dict):
        return
    keys = {"secondary": list, "logic": str, "whole_word": bool, "case_sensitive": bool, "exclude_recursion": bool,
            "prevent_recursion": bool, "scan_depth": (int, type(None)), "order": int,
            "bias": (int, float, type(None))}
    for name, kind in keys.items():
        if name in ext and isinstance(ext[name], kind) and not (kind is int and isinstance(ext[name], bool)):
            value = ext[name]
            if name == "secondary":
                value = [k for k in value if isinstance(k, str)][:MAX_KEYS]
            if name == "logic" and value not in LOGICS:
                continue
            if name == "scan_depth" and value is not None and not 0 <= value <= MAX_SCAN_DEPTH:
                continue
            if name == "bias" and value is not None and (isinstance(value, bool) or not -MAX_BIAS <= value <= MAX_BIAS):
                continue
            setattr(entry, name, value)


def _entries_of(container, what: str) -> list:
    if isinstance(container, dict):
        return list(container.values())
    if isinstance(container, list):
        return container
    raise LoreError(f"The {what} file's entries are neither a list nor an object.")


# -- SillyTavern ------------------------------------------------------------------------
def _read_sillytavern(data: dict, report: ImportReport):
    raw = _entries_of(data["entries"], "SillyTavern")
    if len(raw) > MAX_ENTRIES:
        return raw, None
    items = []
    for position, item in _objects(raw, report):
        items.append((item.get("displayIndex") if isinstance(item.get("displayIndex"), int) else position, item))
    items.sort(key=lambda p: p[0])
    for _, item in items:
        _add(report, lambda item=item: _st_entry(_Entry(item, report)))
    return raw, data.get("name")


def _st_entry(e: _Entry):
    keys, secondary = e.keys("key"), e.keys("keysecondary")
    logic = ST_LOGIC.get(e.number("selectiveLogic", 0), None)
    if logic is None:
        logic = "and_any"
        e.map("mapped an unknown secondary-key logic to AND ANY")
    if secondary and not e.flag("selective", True):
        secondary = []  # SillyTavern ignores them while 'selective' is off
    scan = e.number("scanDepth", None)
    if scan is not None and not 0 <= scan <= MAX_SCAN_DEPTH:
        scan = max(0, min(MAX_SCAN_DEPTH, scan))
        e.map("mapped an out-of-range scan depth")
    position = e.number("position", 0)
    if position not in ST_POSITIONS:
        e.map("mapped an insertion position StoryLoom lacks (placed with the other world info)")
    if e.flag("useProbability", True) and e.number("probability", 100) not in (None, 100):
        e.map("mapped a trigger probability (always fires here)")
    if e.flag("delayUntilRecursion", False):
        e.map("mapped 'delay until recursion' (fires directly too)")
    if e.text("group", "").strip():
        e.map("mapped an inclusion group (all members may fire)")
    if e.flag("vectorized", False):
        e.map("mapped a vector-search entry to a keyword entry")
    if any(e.number(k, 0) for k in ("sticky", "cooldown", "delay")):
        e.map("mapped timed effects (sticky, cooldown, delay)")
    entry = WorldEntry(
        keys=keys, text=e.text("content"), secondary=secondary, logic=logic,
        whole_word=e.flag("matchWholeWords", False), case_sensitive=e.flag("caseSensitive", False),
        constant=e.flag("constant", False), order=e.number("order", 100), scan_depth=scan,
        exclude_recursion=e.flag("excludeRecursion", False), prevent_recursion=e.flag("preventRecursion", False),
        enabled=not e.flag("disable", False), comment=e.text("comment"),
    )
    _apply_ext(entry, e)
    return entry, e.mapped


# Character Card V2/V3 books: snake_case fields, SillyTavern's own extras under `extensions`.
_CARD_FIELDS = {"keys": "key", "secondary_keys": "keysecondary", "content": "content", "constant": "constant",
                "selective": "selective", "insertion_order": "order", "case_sensitive": "caseSensitive"}
_CARD_EXTENSIONS = {"selectiveLogic": "selectiveLogic", "exclude_recursion": "excludeRecursion",
                    "prevent_recursion": "preventRecursion", "scan_depth": "scanDepth",
                    "match_whole_words": "matchWholeWords", "case_sensitive": "caseSensitive",
                    "probability": "probability", "useProbability": "useProbability", "group": "group",
                    "position": "position", "delay_until_recursion": "delayUntilRecursion", "vectorized": "vectorized"}


def _read_character_book(data: dict, report: ImportReport):
    book = _character_book(data)
    raw = book["entries"]
    if len(raw) > MAX_ENTRIES:
        return raw, None
    for _, item in _objects(raw, report):
        st = {theirs: item[mine] for mine, theirs in _CARD_FIELDS.items() if mine in item}
        ext = item.get("extensions") if isinstance(item.get("extensions"), dict) else {}
        st.update({theirs: ext[mine] for mine, theirs in _CARD_EXTENSIONS.items() if mine in ext})
        st["disable"] = not item["enabled"] if isinstance(item.get("enabled"), bool) else False
        st["comment"] = item.get("comment") or item.get("name") or ""
        if item.get("use_regex") is True:  # V3: every key is a pattern; ours are written /.../
            st["key"] = [f"/{k}/" for k in item.get("keys", []) if isinstance(k, str)] \
                if isinstance(item.get("keys"), list) else item.get("keys")
        _add(report, lambda st=st: _st_entry(_Entry(st, report)))
    name = book.get("name") or (data.get("data", {}).get("name") if isinstance(data.get("data"), dict) else None)
    return raw, name


def export_sillytavern(book: Lorebook) -> dict:
    entries = {}
    for uid, w in enumerate(book.entries):
        entries[str(uid)] = {
            "uid": uid, "key": list(w.keys), "keysecondary": list(w.secondary), "comment": w.comment,
            "content": w.text, "constant": w.constant, "vectorized": False, "selective": True,
            "selectiveLogic": {v: k for k, v in ST_LOGIC.items()}[w.logic], "addMemo": True, "order": w.order,
            "position": 0, "disable": not w.enabled, "excludeRecursion": w.exclude_recursion,
            "preventRecursion": w.prevent_recursion, "delayUntilRecursion": False, "probability": 100,
            "useProbability": True, "depth": 4, "group": "", "groupOverride": False, "groupWeight": 100,
            "scanDepth": w.scan_depth, "caseSensitive": w.case_sensitive, "matchWholeWords": w.whole_word,
            "useGroupScoring": None, "automationId": "", "role": None, "sticky": 0, "cooldown": 0, "delay": 0,
            "displayIndex": uid,
        }
        if w.bias is not None:  # the one thing SillyTavern has no field for
            entries[str(uid)][_EXT] = {"bias": w.bias}
    return {"name": book.name, "entries": entries}


# -- NovelAI ----------------------------------------------------------------------------
def _read_novelai(data: dict, report: ImportReport):
    raw = data["entries"]
    if len(raw) > MAX_ENTRIES:
        return raw, None
    for _, item in _objects(raw, report):
        _add(report, lambda item=item: _nai_entry(_Entry(item, report)))
    return raw, data.get("name") or data.get("title")


def _nai_entry(e: _Entry):
    config = e.get("contextConfig") if isinstance(e.get("contextConfig"), dict) else {}
    c = _Entry(config, e.report)
    text = e.text("text")
    prefix, suffix = c.text("prefix"), c.text("suffix", "\n")
    if prefix or suffix.strip():
        text = prefix + text + suffix.rstrip("\n")
        e.map("mapped a prefix or suffix into the entry's text")
    search = e.number("searchRange", NAI_DEFAULT_RANGE)
    if search != NAI_DEFAULT_RANGE:
        e.map("mapped a search range in characters to the game's scan depth in turns")
    if e.flag("keyRelative", False) or c.number("insertionPosition", -1) not in (-1, 0, None):
        e.map("mapped a NovelAI insertion position (placed with the other world info)")
    biases = e.get("loreBiasGroups")
    if isinstance(biases, list) and any(isinstance(g, dict) and g.get("phrases") for g in biases):
        e.map("mapped phrase biases (not kept)")
    if c.number("tokenBudget", 1) not in (1, 2048, None) or c.number("reservedTokens", 0) not in (0, None):
        e.map("mapped a per-entry token budget to the shared world-info budget")
    keys = e.keys("keys")
    entry = WorldEntry(keys=keys, text=text, whole_word=False, case_sensitive=False,
                       constant=e.flag("forceActivation", False), order=c.number("budgetPriority", NAI_DEFAULT_PRIORITY),
                       enabled=e.flag("enabled", True), comment=e.text("displayName"))
    _apply_ext(entry, e)
    return entry, e.mapped


def export_novelai(book: Lorebook) -> dict:
    entries = []
    for w in book.entries:
        entries.append({
            "text": w.text,
            "contextConfig": {"prefix": "", "suffix": "\n", "tokenBudget": 1, "reservedTokens": 0,
                              "budgetPriority": w.order, "trimDirection": "trimBottom", "insertionType": "newline",
                              "maximumTrimType": "sentence", "insertionPosition": -1},
            "lastUpdatedAt": 0, "displayName": w.comment or w.label(), "id": _uuid(book.id, w), "keys": list(w.keys),
            "searchRange": NAI_DEFAULT_RANGE, "enabled": w.enabled, "forceActivation": w.constant,
            "keyRelative": False, "nonStoryActivatable": False, "category": "", "loreBiasGroups": [],
            _EXT: _ext(w),
        })
    return {"lorebookVersion": 5, "entries": entries, "settings": {"orderByKeyLocations": False}, "categories": []}


# -- Kobold (KoboldAI Client/United saves, Kobold Lite / KoboldCpp lists) ----------------
def _read_kobold(data, report: ImportReport):
    title = None
    if isinstance(data, dict):
        title = data.get("name") or data.get("title")
        if isinstance(data.get("worldinfo_v2"), dict):  # KoboldAI United: {"entries": {uid: {...}}}
            raw = _entries_of(data["worldinfo_v2"].get("entries", {}), "KoboldAI")
        else:
            raw = data["worldinfo"]
    else:
        raw = data
    if len(raw) > MAX_ENTRIES:
        return raw, title
    for _, item in _objects(raw, report):
        _add(report, lambda item=item: _kobold_entry(_Entry(item, report)))
    return raw, title


def _kobold_entry(e: _Entry):
    if "entry" in e.raw and "content" not in e.raw:  # AI Dungeon's export, which KoboldAI imports
        return WorldEntry(keys=e.keys("keys"), text=e.text("entry"), whole_word=False), []
    keys = e.keys("key")
    if not keys and not e.text("content").strip():
        return None  # KoboldAI's folder rows and the blank entry its editor keeps at the end
    secondary, logic = (e.keys("keysecondary"), "and_any") if e.flag("selective", False) else ([], "and_any")
    anti = e.keys("keyanti")
    if anti and not secondary:
        secondary, logic = anti, "not_any"
    elif anti:
        e.map("mapped anti-keys beside secondary keys (anti-keys left out)")
    if e.number("probability", 100) not in (None, 100) and e.flag("useprobability", True):
        e.map("mapped a trigger probability (always fires here)")
    text = e.text("content") or e.text("manual_text")
    entry = WorldEntry(keys=keys, text=text, secondary=secondary, logic=logic, whole_word=False,
                       case_sensitive=False, constant=e.flag("constant", False),
                       enabled=not e.flag("widisabled", False), comment=e.text("comment") or e.text("title"))
    _apply_ext(entry, e)
    return entry, e.mapped


def export_kobold(book: Lorebook) -> list:
    """Kobold Lite's world-info list (KoboldCpp imports it; KoboldAI reads the same fields in saves)."""
    out = []
    for uid, w in enumerate(book.entries):
        anti = w.logic == "not_any" and w.secondary
        out.append({
            "key": ",".join(w.keys), "keysecondary": "" if anti else ",".join(w.secondary),
            "keyanti": ",".join(w.secondary) if anti else "", "content": w.text, "comment": w.comment,
            "folder": None, "selective": bool(w.secondary) and not anti, "constant": w.constant,
            "probability": 100, "wigroup": "General", "widisabled": not w.enabled, "uid": uid,
            _EXT: _ext(w),
        })
    return out


# -- export -----------------------------------------------------------------------------
def _ext(w: WorldEntry) -> dict:
    return {"secondary": list(w.secondary), "logic": w.logic, "whole_word": w.whole_word,
            "case_sensitive": w.case_sensitive, "exclude_recursion": w.exclude_recursion,
            "prevent_recursion": w.prevent_recursion, "scan_depth": w.scan_depth, "order": w.order,
            "bias": w.bias}


def _uuid(book_id: str, w: WorldEntry) -> str:
    import uuid

    return str(uuid.uuid5(uuid.UUID(book_id) if len(book_id) == 32 else uuid.NAMESPACE_URL,
                          "\x00".join(w.keys) + "\x00" + w.text))


def export(book: Lorebook, fmt: str) -> str:
    if fmt not in FORMATS:
        raise LoreError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    data = {"sillytavern": export_sillytavern, "novelai": export_novelai, "kobold": export_kobold}[fmt](book)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
