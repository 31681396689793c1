"""Poem forms: line count, rhyme scheme and, for every line, the meter templates it may take.

A template is a string over "0" (weak), "1" (strong) and "x" (either), one character per
syllable. Variants every reader accepts are listed as extra templates: a feminine ending (one
more weak syllable), a headless first anapest in a limerick, a catalectic trochee or dactyl.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass

from storyloom import StoryloomError
from storyloom.paths import assets_dir

METERS = ("iambic", "trochaic", "anapestic", "dactylic", "syllabic")
FOOT_NAMES = {1: "monometer", 2: "dimeter", 3: "trimeter", 4: "tetrameter", 5: "pentameter",
              6: "hexameter", 7: "heptameter", 8: "octameter"}


@dataclass(frozen=True)
class Form:
    key: str
    name: str
    scheme: str  # letters, spaces between stanzas
    meter: str
    feet: tuple[int, ...]  # per line (syllables when syllabic)
    feminine: bool = False
    ask: str = ""  # how a request names it ("a poem in heroic couplets"); "" : "a " + the name

    @property
    def request(self) -> str:
        """The form as a request names it: "a limerick", "a poem in heroic couplets" (never "a
        heroic couplets": the model reads the heading it is asked with)."""
        return self.ask or f"a {self.name.lower()}"

    @property
    def ends_sentence(self) -> bool:
        """Does the poem's last line end its sentence (. ! ?)? Not a syllabic form's (haiku): its
        idiom is the image, often no sentence at all ("Echoes of the past")."""
        return self.meter != "syllabic"

    def closing(self, index: int) -> bool:
        """Is line `index` the last, held to end its sentence (ends_sentence)?"""
        return index == self.lines - 1 and self.ends_sentence

    @property
    def letters(self) -> str:
        return self.scheme.replace(" ", "")

    @property
    def lines(self) -> int:
        return len(self.letters)

    def stanza_breaks(self) -> set[int]:
        """Line indexes after which a blank line goes."""
        breaks, at = set(), 0
        for stanza in self.scheme.split()[:-1]:
            at += len(stanza)
            breaks.add(at - 1)
        return breaks

    def to_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "scheme": self.scheme, "meter": self.meter,
                "feet": list(self.feet), "feminine": self.feminine, "ask": self.ask}

    @classmethod
    def from_dict(cls, data: dict) -> "Form":
        return cls(data["key"], data["name"], data["scheme"], data["meter"], tuple(data["feet"]),
                   bool(data.get("feminine")), str(data.get("ask", "")))

    def templates(self, line: int) -> tuple[str, ...]:
        return meter_templates(self.meter, self.feet[line], self.feminine)

    def describe(self, line: int) -> str:
        n = self.feet[line]
        if self.meter == "syllabic":
            return f"{n} syllables"
        return f"{self.meter} {FOOT_NAMES.get(n, f'{n}-foot')}"

    def partners(self, line: int) -> list[int]:
        """Earlier lines this line must rhyme with."""
        letter = self.letters[line]
        return [i for i in range(line) if self.letters[i] == letter]

    def rhymed_later(self, line: int) -> bool:
        letter = self.letters[line]
        return letter in self.letters[line + 1:] and not self.partners(line)


def meter_templates(meter: str, feet: int, feminine: bool) -> tuple[str, ...]:
    if meter == "syllabic":
        return ("x" * feet,)
    if meter == "iambic":
        base = ["01" * feet]
    elif meter == "trochaic":
        base = ["10" * feet, "10" * (feet - 1) + "1"]
    elif meter == "anapestic":
        base = ["001" * feet, "01" + "001" * (feet - 1)]
    elif meter == "dactylic":
        base = ["100" * feet, "100" * (feet - 1) + "1", "100" * (feet - 1) + "10"]
    else:
        raise StoryloomError(f"Unknown meter {meter!r}: use one of {', '.join(METERS)}.")
    out = list(base)
    if feminine:
        out += [t + "0" for t in base if t.endswith("1")]
    return tuple(dict.fromkeys(out))


def _form(data: dict) -> Form:
    feet = tuple(data["feet"])
    lines = len(data["scheme"].replace(" ", ""))
    if len(feet) == 1:
        feet = feet * lines
    if len(feet) != lines:
        raise StoryloomError(f"Form {data['key']}: {len(feet)} feet values for {lines} lines.")
    return Form(data["key"], data["name"], data["scheme"], data["meter"], feet, bool(data.get("feminine")),
                str(data.get("ask", "")))


def load_forms() -> dict[str, Form]:
    data = tomllib.loads((assets_dir() / "poem_forms.toml").read_text(encoding="utf-8"))
    return {f["key"]: _form(f) for f in data["form"]}


def get_form(key: str) -> Form:
    forms = load_forms()
    if key not in forms:
        raise StoryloomError(f"Unknown form {key!r}: choose {', '.join(forms)} or custom.")
    return forms[key]


def custom_form(scheme: str, meter: str = "iambic", feet: int = 5, feminine: bool = True) -> Form:
    scheme = scheme.strip().upper()
    if not scheme or not all(c.isalpha() or c == " " for c in scheme):
        raise StoryloomError("A scheme is letters, one per line, e.g. ABAB (spaces between stanzas).")
    if meter not in METERS:
        raise StoryloomError(f"Unknown meter {meter!r}: use one of {', '.join(METERS)}.")
    limit = 30 if meter == "syllabic" else 8
    if not 1 <= feet <= limit:
        raise StoryloomError(f"Feet must be between 1 and {limit}" + (" (syllables)." if meter == "syllabic" else "."))
    lines = len(scheme.replace(" ", ""))
    ask = "a short poem" if meter == "syllabic" else f"a rhyming poem in {meter} {FOOT_NAMES.get(feet, 'verse')}"
    return Form("custom", f"Custom {scheme}", scheme, meter, (feet,) * lines, feminine, ask)


CUSTOM_EXAMPLE = "ABAB CDCD iambic 4"


def parse_custom(text: str) -> Form:
    """A custom form as one line reads it: the scheme's letters (spaces between stanzas), then
    optionally a meter and feet per line, in any order: "AABB trochaic 4", "ABA BCB", "ABAB 3"."""
    scheme, meter, feet = [], None, None
    for word in text.split():
        if word.lower() in METERS:
            meter = word.lower()
        elif word.isdigit():
            feet = int(word)
        elif difflib.get_close_matches(word.lower(), METERS, n=1, cutoff=0.75):  # "iambik" is no stanza
            raise StoryloomError(f"Unknown meter {word!r}: use one of {', '.join(METERS)}.")
        else:
            scheme.append(word)
    if not scheme:
        raise StoryloomError(f"A custom form needs a rhyme scheme: letters, one per line, e.g. {CUSTOM_EXAMPLE}.")
    return resolve_form("custom", " ".join(scheme), meter, feet)


def resolve_form(key: str, scheme: str | None = None, meter: str | None = None, feet: int | None = None,
                 feminine: bool = True) -> Form:
    """A named form, or a custom one from scheme/meter/feet (any of them given means custom)."""
    if meter is not None and meter not in METERS:
        raise StoryloomError(f"Unknown meter {meter!r}: use one of {', '.join(METERS)}.")
    if feet is not None:
        limit = 30 if meter == "syllabic" else 8
        if not 1 <= feet <= limit:  # never quietly the default: --feet 0 is a mistake to name
            raise StoryloomError(f"Feet must be between 1 and {limit}" + (" syllables" if meter == "syllabic" else "")
                                 + f" (got {feet}).")
    if key == "custom" or scheme:
        if not scheme:
            raise StoryloomError("A custom form needs --scheme, e.g. --scheme ABAB --meter iambic --feet 4.")
        return custom_form(scheme, meter or "iambic", 5 if feet is None else feet, feminine)
    form = get_form(key)
    if (meter is not None and meter != form.meter) or (feet is not None and set(form.feet) != {feet}):
        # a named form is its meter: a sonnet in trochees is some other form, so say how to make one
        raise StoryloomError(f"The {form.name} form is {shape(form)}; for another meter or length, use "
                             f"--form custom --scheme {form.scheme.replace(' ', '')} with --meter and --feet.")
    return form


def shape(form: Form) -> str:
    """The meter in words: "iambic pentameter", "anapestic, 3/3/2/2/3 feet", "5/7/5 syllables"."""
    counts = "/".join(str(n) for n in form.feet)
    if form.meter == "syllabic":
        return f"{counts} syllables" if len(set(form.feet)) > 1 else f"{form.feet[0]} syllables a line"
    if len(set(form.feet)) == 1:
        return f"{form.meter} {FOOT_NAMES.get(form.feet[0], f'{form.feet[0]}-foot')}"
    return f"{form.meter}, {counts} feet"
