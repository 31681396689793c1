"""One judge of model text for every mode: is this something a player or writer should read?

Small models fail in recognisable ways: they answer like a chatbot ("Here's your options"),
comment on "the story", print menus, timestamps and markdown, speak or decide for the player,
stop on a colon, fall into chains of fragments, repeat earlier turns, leak the prompt's notes,
or wander off the scene. Each check below finds one such defect and says why; `judge` adds up
their costs into a Verdict that ranks candidates (sample-and-rank: the most likely text is not
the best, so we draw several and keep the best under this judge) and explains itself.

Pure Python, no model: a cost of 1.0 or more fails a text on its own; smaller costs are faults
that only decide between candidates.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Sequence

from storyloom.modes import wordfilter
from storyloom.modes.text import SENTENCE_END

FAIL = 1.0
KINDS = ("narration", "option", "passage")


@dataclass(frozen=True)
class Brief:
    """What was asked for, and what the text must stay with.

    kind       narration (an adventure turn or a tree outcome, second person), option (a tree
               action: a short imperative), passage (a co-write turn, any person)
    scene      the recent story and the player's action: a turn should share words with it (an
               option: the passage it follows, which it should act on)
    earlier    earlier turns a new one must not repeat
    hidden     prompt parts a reader must never see (notes, primer, premise, instructions)
    lore       word stems of triggered world info that the scene does not already have: a text
               that uses one drew on the entry, and ranks a little higher
    bias       triggered world info's names and the phrase bias the sampler gives them (the
               critic only carries them from the prompt to the sampler: Adventure.turn_settings)
    action     the player's action ("You open the door."): a turn may tell it again, but a new
               deed of "you" in the narration is the model playing for the player (acts-for-player)
    """

    kind: str = "narration"
    min_words: int = 10
    max_words: int = 160
    min_sentences: int = 1
    scene: str = ""
    earlier: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    lore: tuple[str, ...] = ()
    bias: tuple[tuple[str, float], ...] = ()
    action: str = ""  # the player's action this turn, as the prompt has it: what "you" may do in the turn

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")


@dataclass(frozen=True)
class Finding:
    code: str
    why: str
    cost: float


@dataclass
class Verdict:
    text: str
    findings: list[Finding] = field(default_factory=list)
    relevance: float = 0.0  # share of the text's content words that the scene also has
    lore_used: bool = False  # it uses a triggered world-info entry's own words (Brief.lore)

    @property
    def penalty(self) -> float:
        return sum(f.cost for f in self.findings)

    @property
    def passed(self) -> bool:
        return self.penalty < FAIL

    @property
    def passes_in_scene(self) -> bool:
        """Passed, and shares a word with the scene: a turn good enough to end a batch early (one
        about nothing there, "The room seems to be huge.", is no reason to stop drawing)."""
        return self.passed and self.relevance > 0

    @property
    def quality(self) -> float:
        """Higher is better: penalties first, then a little credit for staying with the scene."""
        return -min(self.penalty, 3.0) + 0.3 * min(self.relevance, 0.5) + (LORE_CREDIT if self.lore_used else 0.0)

    def explain(self) -> str:
        head = "pass" if self.passed else "FAIL"
        if not self.findings:
            return f"{head} (relevance {self.relevance:.2f})"
        parts = "; ".join(f"{f.code} {f.cost:.1f}: {f.why}" for f in self.findings)
        return f"{head} (penalty {self.penalty:.1f}, relevance {self.relevance:.2f}): {parts}"

    def to_dict(self) -> dict:
        return {"passed": self.passed, "penalty": round(self.penalty, 2), "relevance": round(self.relevance, 3),
                "findings": [{"code": f.code, "why": f.why, "cost": f.cost} for f in self.findings]}


# -- text pieces --------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”')
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each even ever every few for
from further had has have having he her here hers herself him himself his how i if in into is it
its itself just like made make many me more most much must my myself near never no nor not now of
off on once only onto or other our ours out over own same she should so some still such than that
the their theirs them then there these they this those through to too under until up upon us very
was we were what when where which while who whom why will with would you your yours yourself
one two back away around again something nothing anything someone there's it's you're you've
you'll i'm that's can't don't didn't won't seem seems look looks see sees come comes go goes get
gets take takes know knows feel feels
""".split())


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def outside_quotes(text: str) -> str:
    """The narration without its dialogue (an open quote runs to the end)."""
    text = _QUOTED.sub(" ", text)
    for mark in ('"', "“"):
        if mark in text:
            text = text.split(mark, 1)[0]
    return text


def sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in SENTENCE_END.finditer(text):
        piece = text[start:m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def _stem(word: str) -> str:
    return word.lower().strip("'")[:5]


def content_stems(text: str) -> set[str]:
    return {_stem(w) for w in words(text) if len(w) >= 4 and w.lower() not in STOPWORDS}


def word_stems(text: str) -> set[str]:
    """Every word's stem, short words too (names: "Pip")."""
    return {_stem(w) for w in words(text) if w.lower() not in STOPWORDS}


def _grams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def _norm_words(text: str) -> list[str]:
    return [w.lower() for w in words(text)]


# -- the checks -----------------------------------------------------------------------------
def _rx(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


TEMPLATE = _rx(r"<\||\|>|</?s>|\[/?INST\]|^\s*(assistant|user|human|system|ai|bot)\s*:")
ASSISTANT = _rx(
    r"\b(as an ai|language model|i'?m sorry,? but|i apologi[sz]e|i (can'?t|cannot) (help|assist|provide|"
    r"continue|write)|i hope (this|that|you)|feel free|let me know|let me (tell|explain|help|describe)|"
    r"here(?: is|'s| are) (?:a|an|the|your|some|what|my|how)\b|great (question|choice)|happy to help|"
    r"i'?d be (happy|glad)|you can (choose|select|pick|type)|please (choose|select|note|let|type|enter)|"
    r"would you like (to|me)|do you want me|what would you like|you might want to|you could try|"
    r"if you('d| would) like|i suggest|i recommend|my (response|answer|suggestion)|in summary|"
    r"to summari[sz]e|in conclusion|overall,|i think you|your (turn|move)\b|good luck|you'?d like|"
    r"let'?s (begin|start|continue|see|go|get|imagine|think)\b)"
)
ASSISTANT_OPENERS = _rx(r"\A\s*(sure|certainly|of course|okay|ok|great|absolutely|alright|yes|no problem)\b[,.!]")
META = _rx(
    r"\b(the|this|our|that|your) (conversation|narrative|dialogue|storyline|plot|prompt|response|passage|"
    r"paragraph|chapter|reader|user|player|narrator|writer|author|roleplay|role-play|character's arc|"
    r"main character|protagonist|game|scenario)\b|"
    r"\b(in|of|to|for|into|continue|add to|end) (the|this) story\b|\bthis story\b|\bstory so far\b|"
    r"\bthe story (continues|goes on|is about|so far|ends)\b|\b(does ?n[o']t|did ?n[o']t|doesn't|didn't) add\b|"
    r"\badds? nothing\b|\bno room for\b|\b(first|second|third)[- ]person\b|\b(present|past) tense\b|"
    r"\bthis character\b|\bthe next (scene|part|turn)\b|\bwhat happens next\b|"
    # the model talking about how it writes (co-write, recorded: "As the story went ahead with no
    # further detail ... I will make sure to ... avoid any unnecessary embellishments")
    r"\bthe story (went|goes|carried|carries) (on|ahead)\b|\bwithout (any )?embellishments?\b|"
    r"\bno (further |more )?(details?|descriptions?) (is |are )?(needed|necessary|required)\b|"
    r"\bunnecessary (details?|descriptions?|words|embellishments?)\b|\beasy to read\b|\bi('m| am) asked to (do|write)\b|"
    r"\beverything i('m| am) asked\b"
)
MENU_LINE = _rx(r"^\s*(\d{1,2}[.):]|[-*•+]\s|\(?[a-e]\)\s|[a-e]:\s|(option|choice|step)\s*\d)")
MENU_INLINE = _rx(r"(?:^|\s)1[.)]\s.+?\s2[.)]\s|\b(your|the|these|some|two|three) (options|choices) (are|is)\b|"
                  r"\b(options|choices)\s*:|\beither\b.{1,60}\bor\b.{1,40}\?|\byou (can|could|may) either\b")
# A sentence of narration that opens with an order is the model instructing the player.
INSTRUCTS = _rx(r"(?:^|[.!?]\s+)(tell|choose|decide|describe|write|imagine|remember|try|type|enter|select|pick|"
                r"continue|consider|note|think about|explain|answer|respond|reply|let us|let's)\s")
TIMESTAMP = _rx(r"\b\d{1,2}:\d{2}:\d{2}\b|^\s*[-+]?\s*\d{1,2}:\d{2}\b|\[\d{1,2}:\d{2}\]")
MARKDOWN = _rx(r"\*\*|__|^\s*#{1,6}\s|```|\[/?[a-z]+(=[^\]\n]*)?\]|\[[^\]\n]+\]\([^)\n]+\)|^\s*>|\|.*\||https?://|www\.|(?<![\w*])\*[^*\n]+\*")
# Outside quotes only: the model deciding or speaking for "you".
FOR_PLAYER = _rx(
    r"\byou (?:then |quickly |slowly |calmly |also )?(say|said|tell|told|ask|asked|reply|replied|respond|"
    r"responded|answer|answered|shout|shouted|whisper|whispered|yell|yelled|exclaim|exclaimed|mutter|"
    r"muttered|decide|decided|choose|chose|agree|agreed|promise|promised|insist|insisted|explain|"
    r"explained|thank|thanked|suggest|suggested|introduce|introduced|call out|called out|speak|spoke)\b|"
    r"^\s*you\s*:"
)
# "You examine the next room.": a clause of narration in which "you" does something the player
# did not ask. What "you" perceive, know or are is the world answering, and stays free.
YOU_DO = _rx(r"(?:^|[.!?;]\s+|,?\s+(?:and|then|before|so)\s+)(?:then\s+)?you\s+(?:(?:then|quickly|slowly|carefully|"
             r"calmly|also|now|finally|just|immediately|cautiously|quietly|gently)\s+)?([a-z]+)\b")
YOU_MAY = frozenset("""
see saw sees notice notices noticed find finds found feel feels felt hear hears heard realize realizes
realized realise realises realised sense senses sensed smell smells smelled smelt taste tasted spot spotted
recognize recognized recognise recognised know knew understand understood remember remembered recall
recalled wonder wondered think thought suspect suspected hope hoped fear feared wish believe believed
are were have had has can could cannot must may might will would should shall need needed want wanted
seem seems seemed appear appears appeared look looks looked watch watched catch caught glimpse glimpsed
get got become became begin began start started stand stood sit sat lie lay hold held keep kept
am is be been do did don't didn't can't couldn't won't wouldn't shouldn't aren't weren't haven't hadn't
too also all both alone still not never
""".split())
QUESTION_TO_PLAYER = _rx(r"\b(what|how|where|who) (do|will|would|should|can|did) (you|i|we)\b[^.!?]*\?|"
                         r"\bwhat now\?|\bwhat next\?|\band then what\?")
SCRIPT_LINE = re.compile(r"^\s*[A-Z][\w.']*(?: [A-Z][\w.']*){0,2}:\s+\S", re.MULTILINE)  # "Old Man: ..."
LEAK = _rx(r"\b[A-Z]?\w+ (wrote|writes|said|asked)\s*:|\bi want (a|an|you to)\b|\b(write|give) (me )?(a|an) "
           r"(story|poem|paragraph|sentence|scene)\b|author'?s note|\bworld info\b|^\s*(memory|premise|title|"
           r"genre|style|setting|context|note|scenario|summary|instructions?|prompt|story)\s*:|"
           r"\[[^\]\n]*:[^\]\n]*\]|\[\s*(note|author|ooc|scene|narrator|continue|end|insert|image)\b")
# A school exercise, not story (co-write, recorded: "If you have a 21-year-old man's weight how much
# does he need?"): a question of quantities in a text with figures, or one opening with "if", or an
# order to work it out.
QUIZ = _rx(r"\bhow (much|many|long|far|old|tall|fast|heavy|big)\b|\bwhat (is|was|are|were) the (total|sum|number|"
           r"value|answer|average|area|cost|price|difference)\b")
QUIZ_ORDER = _rx(r"^\s*(calculate|solve|compute|work out|find the (total|sum|value|answer|number))\b")
# The model preaching about its own text (co-write, recorded: "This is just one example of all these
# stories. People make mistakes every time they want something. Everyone should be more careful").
SERMON = _rx(r"\bthis is (just |only )?(one|an|another) example\b|\b(these|such|all (the|these|of these)) stories\b|"
             r"\bthe (moral|lesson) (of|here|is)\b|\b(everyone|everybody|we all|people) (should|must) (always |never )?"
             r"(be|try|remember|learn|take|think)\b")
FIRST_PERSON = _rx(r"\b(i|i'm|i've|i'll|i'd|me|my|myself|mine|we|we're|we've|our|us)\b")
JUNK = _rx(r"[!?]{3,}|(.)\1{5,}|\S{28,}|[\u2600-\u27bf\U0001F300-\U0001FAFF]|#\w")

# Options: what cannot start a short imperative ("Ve got", "Are standing", "The door opens").
NOT_IMPERATIVE = frozenset("""
ve re ll d s m t am are is was were be been being have has had having will would shall should can
could may might must does did don't doesn't didn't won't can't isn't aren't wasn't weren't
i you he she it we they me him her us them my your his its our their this that these those there
here the a an some any no every each all both either neither one as if then when while because so
but and or nor yet suddenly finally meanwhile now later soon still also just perhaps maybe not
what who whom whose which where why how you've you're you'll you'd i'm i've i'll i'd he's she's it's
they're we're there's that's
""".split())
ING_ED_VERBS = frozenset("bring sing swing sting fling cling ring wring feed heed need bleed breed speed proceed "
                         "succeed shed wed embed seed weed exceed".split())
# "Watch as the old lady.", "Hide while the guard.": a clause opened and its verb cut off. ("as"
# and "until" also lead plain phrases: "dress as a guard", "wait until the morning".)
CLAUSE_CUT = _rx(r"\b(?:(?:watch|see|look|listen|stare|wait)\s+as|while|when|whenever|because|if|unless|though|"
                 r"although|whether|that|who|which|where)\s+(?:the|a|an|his|her|their|its|my|your|our|this|these|"
                 r"those|some)\s+((?:[a-z'-]+\s+){0,2}[a-z'-]+)\s*[.!]?$")
CLAUSE_VERBS = frozenset("is are was were be has have had can could will would shall should may might must does "
                         "did do goes comes sleeps".split())


def clause_cut(text: str) -> str | None:
    """The cut clause's words ("the old lady") where one has no word that could be its verb."""
    m = CLAUSE_CUT.search(text.strip())
    if not m:
        return None
    rest = m.group(1).lower().split()
    if any(w in CLAUSE_VERBS or w.endswith(("ed", "ing")) or (w.endswith("s") and not w.endswith("ss"))
           for w in rest):
        return None  # "...while the guard sleeps", "...where the river bends"
    return m.group(0).strip()


DANGLING_WORDS = frozenset("the a an to and or of with your his her their its at into onto in on for from by "
                           "as but than that which who my our this these those very".split())
OUTCOME_IN_OPTION = _rx(r"(, but the|,? but (it|he|she|they|nothing|there|you|no one|nobody|someone|somebody|none))\b|\byou (see|find|notice|realize|"
                        r"hear|feel|discover)\b|\b(it|the door) (is|'s) (locked|empty|stuck)\b|\bwhat do you do\b|"
                        # "...and a door opens": the world acts, not the player
                        r"\b(and|as|where|while|until) (a|an|the|some) (\w+ ){1,2}(opens|appears|is|are|was|were|"
                        r"comes|falls|stands|lies|seems|looks)\b")


def _check_common(text: str, brief: Brief, add) -> None:
    narration = outside_quotes(text)
    if TEMPLATE.search(text):
        add("template", "chat or prompt markup in the text", FAIL)
    m = ASSISTANT.search(narration) or ASSISTANT_OPENERS.search(narration)
    if m:
        add("assistant", f"assistant voice: {m.group(0).strip()!r}", FAIL)
    m = META.search(narration)
    if m:
        add("meta", f"talks about the writing, not the world: {m.group(0).strip()!r}", FAIL)
    m = SERMON.search(narration)
    if m:
        add("sermon", f"preaches about the story, not tells it: {m.group(0).strip()!r}", FAIL)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    menu = [ln for ln in lines if MENU_LINE.search(ln)]
    m = MENU_INLINE.search(text)
    if menu or m:
        add("menu", f"a menu or numbered options: {(menu[0] if menu else m.group(0)).strip()[:40]!r}", FAIL)
    m = TIMESTAMP.search(text)
    if m and m.group(0).strip().lstrip("+-").strip() not in brief.scene:
        add("timestamp", f"a stray timestamp: {m.group(0).strip()!r}", FAIL)
    m = MARKDOWN.search(text)
    if m:
        add("markdown", f"markup or links: {m.group(0).strip()[:30]!r}", FAIL)
    scripts = [ln for ln in lines if SCRIPT_LINE.match(ln)]
    if scripts and brief.kind != "option":
        add("script", f"script or chat format: {scripts[0].strip()[:40]!r}", FAIL)
    m = LEAK.search(text)
    if m:
        add("leak", f"prompt or note text: {m.group(0).strip()[:40]!r}", FAIL)
    else:
        leaked = _leaked(text, brief.hidden, brief.scene)
        if leaked:
            add("leak", f"repeats hidden prompt text: {leaked!r}", FAIL)
    m = JUNK.search(text)
    if m:
        add("junk", f"noise: {m.group(0)[:20]!r}", 0.5)


def _leaked(text: str, hidden: Sequence[str], scene: str = "") -> str:
    """A run of words from a hidden part (and not from the scene): 5 words, or 2 from a short note."""
    ws, scene_words = _norm_words(text), _norm_words(scene)
    for h in hidden:
        theirs = _norm_words(h)
        n = 2 if len(theirs) <= 12 else 5
        mine = set(_grams(ws, n)) - set(_grams(scene_words, n))
        for gram in _grams(theirs, n):
            if gram in mine and (n > 2 or not set(gram) <= STOPWORDS):
                return " ".join(gram)
    return ""


def _check_prose(text: str, brief: Brief, add) -> float:
    """Narration and passages: ending, fragments, repeats, drift, length. Returns relevance."""
    narration = outside_quotes(text)
    stripped = text.rstrip()
    if stripped.endswith((":", ",", ";", "-", "—", "(")):
        add("dangling", f"ends on {stripped[-1]!r}", FAIL)
    elif text.count('"') % 2 or text.count("“") > text.count("”"):
        add("dangling", "a quote is left open", FAIL)
    elif not SENTENCE_END.search(stripped[-3:] + " ") and not stripped.endswith(("\"", "”", "'")):
        add("dangling", "does not end a sentence", FAIL)
    elif stripped.endswith(("...", "…")):
        add("trailing", "trails off with an ellipsis", 0.4)

    ws = words(text)
    sents = sentences(text)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    short_lines = [ln for ln in lines if len(words(ln)) < 4]
    short_sents = [s for s in sents if len(words(s)) <= 3]
    if len(lines) >= 3 and len(short_lines) * 2 >= len(lines):
        add("fragments", f"{len(short_lines)} of {len(lines)} lines are fragments", FAIL)
    elif len(sents) >= 3 and len(short_sents) * 5 >= len(sents) * 3:
        add("fragments", f"{len(short_sents)} of {len(sents)} sentences are fragments", FAIL)
    elif len(lines) >= 4 and len(lines) * 12 > len(ws):
        add("fragments", "many short lines", 0.5)

    if len(ws) < brief.min_words:
        add("length", f"{len(ws)} words, asked for at least {brief.min_words}", FAIL)
    elif len(ws) > brief.max_words:
        add("length", f"{len(ws)} words, asked for at most {brief.max_words}", FAIL)
    # a paragraph may be two long sentences (an opening of 90 words in two, played): fewer sentences
    # than asked fail only while the words are fewer than twice the least asked
    if len(sents) < brief.min_sentences and len(ws) < 2 * brief.min_words:
        add("length", f"{len(sents)} sentence(s), asked for at least {brief.min_sentences}", FAIL)

    norm = [w.lower() for w in ws]
    for other in brief.earlier:
        theirs = _norm_words(other)
        if len(norm) >= 4 and difflib.SequenceMatcher(None, norm, theirs, autojunk=False).ratio() >= 0.8:
            add("repeat", "says again what an earlier turn said", FAIL)
            break
    else:
        before = set()
        for other in brief.earlier:
            before.update(_grams(_norm_words(other), 4))
        grams = _grams(norm, 4)
        if grams:
            old = sum(g in before for g in grams) / len(grams)
            if old >= 0.5:
                add("repeat", f"{old:.0%} of its phrases come from earlier turns", FAIL)
            elif old >= 0.2:
                add("repeat", f"{old:.0%} of its phrases come from earlier turns", 0.5)
    grams = _grams(norm, 4)
    if len(grams) >= 6:
        own = 1 - len(set(grams)) / len(grams)
        if own >= 0.3:
            add("loop", f"{own:.0%} of its phrases repeat inside it", FAIL)
        elif own >= 0.12:
            add("loop", f"{own:.0%} of its phrases repeat inside it", 0.4)
    seen_sents: set[str] = set()
    for s in sents:
        key = " ".join(_norm_words(s))
        if len(key.split()) >= 3 and key in seen_sents:
            add("loop", f"a sentence twice: {s[:40]!r}", FAIL)
            break
        seen_sents.add(key)

    counted = bool(re.search(r"\d", narration))  # figures to work with
    for s in sentences(narration):
        if (s.rstrip().endswith("?") and QUIZ.search(s) and (counted or re.match(r"\s*if\b", s, re.I))
                or QUIZ_ORDER.search(s)):
            add("quiz", f"a quiz or word problem, not story: {s.strip()[:40]!r}", FAIL)
            break

    mine = content_stems(text)
    relevance = 0.0
    if brief.scene and mine:
        shared = mine & content_stems(brief.scene)
        relevance = len(shared) / len(mine)
        scene_size = len(content_stems(brief.scene))
        if len(mine) >= 6 and not shared:  # a fault only when the scene gave enough to share
            add("drift", "shares no word with the scene", FAIL if scene_size >= 12 else 0.4)
        elif len(mine) >= 10 and relevance < 0.08:
            add("drift", f"little to do with the scene ({relevance:.0%} shared)", 0.4)

    if brief.kind == "narration":
        m = FOR_PLAYER.search(narration)
        if m:
            add("for-player", f"speaks or decides for the player: {m.group(0).strip()!r}", FAIL)
        firsts = FIRST_PERSON.findall(narration)
        if len(firsts) >= 2:
            add("first-person", f"'{firsts[0]}' outside dialogue: a narrator talking, not the story", FAIL)
        elif firsts:
            add("first-person", f"'{firsts[0]}' outside dialogue", 0.5)
        m = INSTRUCTS.search(narration)
        if m:
            add("instructs", f"gives the player orders: {m.group(0).strip()!r}", FAIL)
        deed = acts_for_player(narration, brief.action)
        if deed:
            add("acts-for-player", f"does for the player what they did not ask: 'you {deed}'", ACTS_COST)
        asked = [s for s in sentences(narration) if s.rstrip().endswith("?")]
        m = QUESTION_TO_PLAYER.search(narration)
        if asked and len(asked) * 2 >= len(sentences(narration)):
            add("questions", f"{len(asked)} of its sentences are questions, not narration", FAIL)
        elif m:
            add("asks-player", f"asks the player instead of narrating: {m.group(0).strip()!r}", 0.6)
        elif narration.rstrip().endswith("?"):
            add("question", "ends on a question", 0.3)
    return relevance


ACTS_COST = 0.4  # a fault between candidates (the 135M model's turns often do it), not a fail on its own


def acts_for_player(narration: str, action: str) -> str | None:
    """The first verb of a new deed of "you" in the narration: not the action told again (its own
    verb at the turn's start, or on something the action names), not perceiving or being."""
    asked = {w.lower()[:4] for w in words(action)}  # "walk" asked, "walked" told: the same deed
    named = content_stems(action)
    for m in YOU_DO.finditer(narration):
        verb = m.group(1).lower()
        if verb in YOU_MAY:
            continue
        if verb[:4] in asked:
            rest = re.split(r"[.!?;,]", narration[m.end():], maxsplit=1)[0]
            if not narration[:m.start()].strip() or content_stems(rest) & named:
                continue  # "You examine the door...": the action told; "You examine the next room": another
        return verb
    return None


def _check_option(text: str, brief: Brief, add) -> None:
    ws = words(text)
    if not ws:
        add("empty", "no words", FAIL)
        return
    first = ws[0].lower()
    if first in NOT_IMPERATIVE:
        why = ("a fragment of You've/You're/You'll" if first in ("ve", "re", "ll", "d", "s", "m", "t")
               else f"{ws[0]!r} describes, it does not act" if first.startswith(("you'", "i'"))
               else f"starts with {ws[0]!r}: not an action")
        add("not-action", why, FAIL)
    elif (first.endswith(("ing", "ed")) and first not in ING_ED_VERBS) or \
            (first.endswith("s") and not first.endswith(("ss", "us")) and len(first) > 3):
        add("not-action", f"{ws[0]!r} is not an imperative", FAIL)
    if len(ws) > brief.max_words:
        add("length", f"{len(ws)} words; an option has at most {brief.max_words}", FAIL)
    bare = outside_quotes(text)
    if "?" in bare:
        add("outcome", "a question, not an action", FAIL)
    if SENTENCE_END.search(bare.rstrip().rstrip(".!…")):
        add("outcome", "more than one sentence: an action and its outcome", FAIL)
    m = OUTCOME_IN_OPTION.search(bare)
    if m:
        add("outcome", f"tells what happens: {m.group(0).strip()!r}", FAIL)
    end = text.rstrip()
    if end.endswith(("…", "...", ",", ":", ";", "-")) or ws[-1].lower() in DANGLING_WORDS \
            or not end.endswith((".", "!", '"', "”")):
        add("cut", "cut off before it ends", FAIL)
    elif text.count('"') % 2:
        add("cut", "a quote is left open", FAIL)
    elif cut := clause_cut(bare):
        add("cut", f"a clause without its verb: {cut!r}", FAIL)
    firsts = FIRST_PERSON.findall(bare)
    if firsts:
        add("first-person", f"'{firsts[0]}' in an option", FAIL)
    acted_on = words(bare)[1:]  # the verb and any words said in quotes aside
    if brief.scene and (astray := option_astray(acted_on, brief.scene)):
        add("drift", f"acts on nothing in the scene ({', '.join(astray)})", OPTION_DRIFT_COST)


# "Take off your armor." at a night market: an option about things the passage never named ranks
# below one about what is there (a fault between options, not a fail: "Look around." names nothing)
OPTION_DRIFT_COST = 0.3
# Words of an option that name no thing of the scene ("take a moment", "make yourself comfortable").
PLAIN_WORDS = frozenset("""moment moments while time around across along away back forward ahead long
yourself comfortable careful quiet quietly slowly carefully closer close something anything everything
nothing someone anyone everyone place thing things step steps turn look best""".split())


def option_astray(named: Sequence[str], scene: str) -> list[str]:
    """An option's words (its verb aside) when none of its things is in the scene: a word is there
    when a scene word shares its first four letters or holds its first five ("door" in "doorstep",
    "stairs" in "upstairs"). Empty where one is there, or it names nothing ("Look around.")."""
    things = [w.lower() for w in named if len(w) >= 4 and w.lower() not in STOPWORDS and w.lower() not in PLAIN_WORDS]
    seen = {w.lower() for w in words(scene)}
    if any(any(s.startswith(w[:4]) or w[:5] in s for s in seen) for w in things):
        return []
    return things


LORE_CREDIT = 0.25  # using triggered world info outweighs a small fault (a 0.2-0.5 penalty), never a fatal one


def judge(text: str, brief: Brief | None = None) -> Verdict:
    """The verdict on one text for what `brief` asked."""
    brief = brief or Brief()
    verdict = Verdict(text)

    def add(code: str, why: str, cost: float) -> None:
        verdict.findings.append(Finding(code, why, cost))

    if not text.strip():
        add("empty", "no text", FAIL)
        return verdict
    _check_common(text, brief, add)
    if filtered := wordfilter.found(text):  # the settings' word filter (on unless turned off)
        add("filtered", f"'{filtered[0]}' is kept out by the word filter", FAIL)
    if brief.kind == "option":
        _check_option(text, brief, add)
    else:
        verdict.relevance = _check_prose(text, brief, add)
        verdict.lore_used = bool(brief.lore) and not word_stems(text).isdisjoint(brief.lore)
    return verdict


# -- ranking --------------------------------------------------------------------------------
MODEL_WEIGHT = 0.5  # one nat of PMI per token is worth half a fatal fault: the critic decides first
LENGTH_CREDIT = 0.2  # below the lore credit, about the most relevance can add (0.15)


def best_first(verdicts: Sequence[Verdict], model_scores: Sequence[float] | None = None,
               full_words: int = 0) -> list[int]:
    """Indexes of `verdicts`, best first: passing texts first, then the critic's quality, then
    (when given) the model's length-normalised score; ties keep the order drawn. With
    `full_words`, a text gets up to LENGTH_CREDIT as it nears that many words (a whole turn
    beats a one-line one of the same quality)."""
    def key(i: int):
        v = verdicts[i]
        extra = MODEL_WEIGHT * model_scores[i] if model_scores is not None else 0.0
        if full_words:
            extra += LENGTH_CREDIT * min(1.0, len(words(v.text)) / full_words)
        return (not v.passed, -(v.quality + extra), i)

    return sorted(range(len(verdicts)), key=key)


def can_score(generator) -> bool:
    """Whether the backend can give log-probs of given text (a remote server may not)."""
    return generator.capabilities.scoring


NEUTRAL_PROMPT = "\n"


def pmi_scores(generator, prompt: str, texts: Sequence[str], tail_chars: int = 600) -> list[float]:
    """Mean token log-prob of each text after the prompt minus after a neutral prompt (PMI):
    generic text that any story could have gains nothing, text that follows this one gains.
    Only the prompt's end is used: it is what the continuation must follow, and it is cheaper."""
    context = prompt[-tail_chars:]
    joiner = " " if context and not context[-1].isspace() else ""
    shown = [joiner + t for t in texts]
    cond = generator.score_many(context, shown)
    base = generator.score_many(NEUTRAL_PROMPT, [t for t in texts])
    return [c - b for c, b in zip(cond, base)]
