"""The turn critic: each defect class fails, clean turns pass, and verdicts explain themselves."""
from __future__ import annotations

import pytest

from storyloom.modes.critic import Brief, best_first, judge

SCENE = ("You are on a quest to defeat the evil dragon of Larion. You reach the edge of a dark forest. "
         "An old woman waits by the road with a lantern.\n> You ask the woman about the dragon.")
NARRATION = Brief(kind="narration", scene=SCENE, earlier=(
    "The woman lifts her lantern and studies your face. Her eyes are pale and sharp.",))


def codes(text: str, brief: Brief = NARRATION) -> set[str]:
    return {f.code for f in judge(text, brief).findings if f.cost >= 1.0}


CLEAN_TURNS = [
    'The old woman lowers her lantern. "The dragon sleeps in the mountains to the north," she says. '
    '"Few who climb to his cave come back."',
    "She points a crooked finger at the dark forest. Beyond the trees, she says, the old road climbs toward "
    "the mountains where the dragon hunts at dusk.",
    "The woman laughs softly and hands you the lantern. Its flame burns blue, and the shadows of the forest "
    "draw back from the road.",
]


@pytest.mark.parametrize("text", CLEAN_TURNS)
def test_clean_turns_pass(text):
    verdict = judge(text, NARRATION)
    assert verdict.passed, verdict.explain()
    assert verdict.relevance > 0


# Each defect class, with the kind of text the default model really writes (recorded in play).
DEFECTS = [
    ("assistant", "Sure! Here's what happens next: the woman tells you about the dragon in the forest."),
    ("assistant", "I'm sorry, but I can't continue with the dragon and the woman in the forest."),
    ("meta", "This doesn't add anything to the conversation. The woman and the dragon stay in the forest."),
    ("meta", "There's no room for dialogue between this character and the woman by the forest road."),
    ("meta", "As the story went ahead with no further detail there was nothing but the woman and the dragon. "
             "I will make sure to do everything I am asked to avoid any unnecessary embellishments."),
    ("menu", "Here's your options. 1. You choose the forest road. 2. You ask the woman about the dragon."),
    ("menu", "The woman waits by the road.\n- Follow the forest road\n- Ask about the dragon\n- Leave"),
    ("timestamp", "The woman waits with her lantern by the dark forest road.\n+ 4:30:25\n- 1:00:02"),
    ("markdown", "**The Dragon** lives in the mountains beyond the dark forest, the woman says with a nod."),
    ("for-player", "The woman frowns. You tell her that you will kill the dragon of Larion by morning."),
    ("for-player", "You decide to follow the woman into the dark forest and forget the dragon."),
    ("dangling", "The woman lifts her lantern toward the forest. The dragon responds:"),
    ("dangling", 'The woman lifts her lantern toward the forest and says, "The dragon sleeps.'),
    ("dangling", "The woman lifts her lantern toward the forest and the dragon of Larion"),
    ("fragments", "The woman.\nThe lantern.\nThe forest.\nThe dragon.\nYou wait."),
    ("repeat", "The woman lifts her lantern and studies your face. Her eyes are pale and sharp."),
    ("loop", "The dragon is in the forest. The dragon is in the forest. The dragon is in the forest."),
    ("drift", "Quarterly revenue increased because investors purchased additional technology shares yesterday."),
    ("length", "The woman nods."),
    ("leak", "Tara wrote: I want a story about the woman with the lantern and the dragon in the forest."),
    ("questions", "Where is the dragon? Who is the woman? What does the forest hide?"),
    ("instructs", "The woman waits in the forest. Describe what you say to her about the dragon."),
    ("first-person", "I think the woman knows where the dragon is. I will ask my friend in the forest."),
    ("template", "The woman nods toward the dark forest and the dragon.<|im_end|>"),
    ("sermon", "The woman and the dragon are gone. This is just one example of all these stories. People make "
               "mistakes every time they want something. Everyone should be more careful with things."),
    ("script", "Woman: The dragon lives beyond the forest, past the old road.\nKnight: Thank you."),
]


@pytest.mark.parametrize("code,text", DEFECTS)
def test_each_defect_class_fails(code, text):
    verdict = judge(text, NARRATION)
    assert not verdict.passed, verdict.explain()
    assert code in codes(text), verdict.explain()
    assert code in verdict.explain()


def test_dialogue_may_say_what_narration_may_not():
    text = ('The woman smiles. "I can tell you where the dragon sleeps," she says, "if you carry my lantern '
            'through the forest."')
    assert judge(text, NARRATION).passed, judge(text, NARRATION).explain()


def test_a_time_from_the_scene_is_not_a_stray_timestamp():
    brief = Brief(scene="The reactor alarm goes off at 03:00 on the station. You take the lift down.")
    assert "timestamp" not in codes("The clock on the reactor wall still reads 03:00, and the lift doors open "
                                    "onto a silent station deck.", brief)


def test_hidden_prompt_text_must_not_leak():
    brief = Brief(scene=SCENE, hidden=("[Author's note: second person, dark and slow]",
                                       "Rain drums on the roof of the shepherd's hut where you shelter."))
    assert "leak" in codes("Second person, second person. The woman and the dragon in the forest wait.", brief)
    assert "leak" in codes("Rain drums on the roof of the shepherd's hut where the woman keeps the dragon "
                           "lantern.", brief)


OPTIONS = Brief(kind="option", max_words=12)


@pytest.mark.parametrize("text", ["Open the iron door.", "Ask the woman about the dragon.",
                                  'Say "Who goes there?"', "Follow the old road north.", "Cross the river.",
                                  "Hide while the guard sleeps.", "Wait until the morning.", "Dress as a guard.",
                                  "Go where the river bends.", 'Say "Watch as the old lady."',
                                  "Take everything but the map."])
def test_good_options_pass(text):
    assert judge(text, OPTIONS).passed, judge(text, OPTIONS).explain()


@pytest.mark.parametrize("text,code", [
    ("Ve got a long way to go.", "not-action"),  # the prompt ended on "> You": "You've got..." cut
    ("Re about to leave.", "not-action"),
    ("Are standing in a room.", "not-action"),
    ("The door is locked.", "not-action"),
    ("Looks around the room.", "not-action"),
    ("Try the door. It's locked. What do you do?", "outcome"),
    ("Try the door, but it is locked.", "outcome"),
    ("Put the box into the oven, but no one comes out.", "outcome"),  # offered at the Midnight Market
    ("Knock on the door, but nobody answers.", "outcome"),
    ("Walk toward the old", "cut"),
    ("Pick up the sword and…", "cut"),
    ("Watch as the old lady.", "cut"),  # played: the clause's verb cut off
    ("Hide while the guard.", "cut"),
    ("Ask the man who the old.", "cut"),
    ("Walk along the old road toward the mountains where the dragon sleeps in his cave.", "length"),
])
def test_bad_options_fail(text, code):
    verdict = judge(text, OPTIONS)
    assert not verdict.passed and code in codes(text, OPTIONS), verdict.explain()


def test_paragraph_length_is_honoured():
    brief = Brief(kind="passage", min_words=35, min_sentences=3, scene="the lighthouse keeper and the storm")
    short = "The lighthouse keeper looked at the storm."
    long = ("The lighthouse keeper looked at the storm rolling in from the west. Rain hammered the glass, and "
            "the great lamp swung its beam across the black water. Somewhere out there a bell was ringing, "
            "slow and steady, as if a ship were still trying to find the harbour.")
    assert "length" in codes(short, brief)
    assert judge(long, brief).passed, judge(long, brief).explain()
    two_short = "The lighthouse keeper looked at the storm rolling in from the west. Rain hammered the glass."
    assert "length" in codes(two_short, brief)
    two_long = ("The lighthouse keeper looked at the storm rolling in from the west, the rain hammering the glass "
                "of the lamp room while the great lamp swung its beam across the black water and the gulls "
                "huddled on the rocks below. Somewhere out beyond the reef a bell was ringing, slow and steady, "
                "as if a ship were still trying to find the harbour before the tide turned against it at last.")
    assert judge(two_long, brief).passed, judge(two_long, brief).explain()


def test_passages_may_be_in_first_person_but_narration_may_not():
    text = "I walked down to the harbour at dawn, and my father's boat was already gone from the storm."
    assert judge(text, Brief(kind="passage", scene="the harbour storm and my father's boat")).passed
    assert "first-person" in codes(text, Brief(scene="the harbour storm and my father's boat"))


def test_ranking_puts_passing_text_first_and_model_scores_break_ties():
    texts = ["What do you do?", CLEAN_TURNS[0], CLEAN_TURNS[1]]
    verdicts = [judge(t, NARRATION) for t in texts]
    order = best_first(verdicts)
    assert order[-1] == 0
    order = best_first(verdicts, model_scores=[5.0, -1.0, 1.0])
    assert order == [2, 1, 0]  # a likely failing text never beats a passing one


def test_explain_names_each_fault_and_to_dict_round_trips():
    verdict = judge("The dragon responds:", NARRATION)
    text = verdict.explain()
    assert text.startswith("FAIL") and "dangling" in text and "length" in text
    data = verdict.to_dict()
    assert data["passed"] is False and {f["code"] for f in data["findings"]} >= {"dangling", "length"}


# Recorded from the default model (SmolLM2-135M) playing the knight and the detective.
RECORDED_BAD = [
    "What do you do?",
    "Is there anything else you'd like me to know about the house?",
    "Are there any specific features about Lord Ashcombe that catch your eye?",
    "you see a figure with an axe and the wind is howling. You can either be the brave knight or the foe. "
    "Tell you where to find him.",
    "There's a village just to your left. They're a friendly ones. I don't know what to make of them.\n"
    "What do you tell them?",
    "I'm a knight. I need you to help me with a job. You're here.\nThis land is your home. Here's what "
    "you've got. You're here.",
    "The man looks at you.\n- A mastermind\nHe stands up and introduces himself.\nIsn't he Lord Ashcombe?",
    "## What would you do?",
    '*you raise your eye *"It seems like nothing."*\nA: A mysterious stranger has discovered you are a '
    "scavenger from the ruins of the old world.",
]


@pytest.mark.parametrize("text", RECORDED_BAD)
def test_recorded_bad_turns_fail(text):
    brief = Brief(scene="Lord Ashcombe's house, the butler, the knight, a stranger in the forest, the old world")
    assert not judge(text, brief).passed, judge(text, brief).explain()


def test_recorded_good_turn_passes():
    text = ("A small village stands ahead. A guard is standing there with a sword at his side, and a map of "
            "Larion is carved into the wooden gate behind him.")
    brief = Brief(scene="You set out along the old road and reach the edge of a dark forest in Larion.")
    assert judge(text, brief).passed, judge(text, brief).explain()


def test_bracketed_notes_leak_but_bbcode_is_markup():
    assert "leak" in codes("[Author's note: keep it grim] The woman lifts the lantern over the forest road.")
    assert "markdown" in codes("The woman lifts the [bold]lantern[/bold] over the dark forest road by the dragon.")


def test_a_colon_in_prose_is_not_a_script_line():
    text = ("There is only one person: one king with many eyes. He is the King of Larion, and he has watched "
            "the forest road all his life.")
    assert "script" not in codes(text) and "Old Man" not in text
    assert "script" in codes("Old Man: The dragon sleeps in the forest.\nKnight: Then I will wake him.")


ASKED = Brief(kind="narration", scene=SCENE, action="> You ask the woman about the dragon.")


def soft(text: str, brief: Brief = ASKED) -> dict[str, float]:
    return {f.code: f.cost for f in judge(text, brief).findings}


@pytest.mark.parametrize("text, deed", [
    ("The woman points north. You walk into the dark forest and leave the road behind.", "walk"),
    ("The woman shrugs, and you draw your sword and march toward the mountains.", "draw"),
    ("She says nothing. Then you quickly climb the old road toward the dragon's cave.", "climb"),
])
def test_a_new_deed_of_you_costs_a_fault_between_candidates(text, deed):
    """The model playing on for the player ("You examine the next room.", recorded): a fault that
    ranks the turn below one where the world answers, not a fail of its own."""
    found = soft(text)
    assert found.get("acts-for-player") == pytest.approx(0.4)
    assert f"'you {deed}'" in next(f.why for f in judge(text, ASKED).findings if f.code == "acts-for-player")
    assert judge(text, ASKED).passed
    answer = "The old woman lowers her lantern. The dragon, she says, sleeps in the mountains to the north."
    assert best_first([judge(text, ASKED), judge(answer, ASKED)]) == [1, 0]


@pytest.mark.parametrize("text", [
    "You see fear in her pale eyes. You notice her hands shake on the lantern as she speaks of the dragon.",
    "You are alone on the road now, and you feel the cold of the dark forest at your back.",
    'The woman laughs. "You go first into the forest, and you find the dragon yourself," she says.',
])
def test_the_asked_deed_perception_and_dialogue_are_free(text):
    assert "acts-for-player" not in soft(text)
    lit = Brief(kind="narration", scene=SCENE, action="> You light your torch.")
    told = "You light your torch, and the old woman steps back from its flame with a hiss."
    assert "acts-for-player" not in soft(told, lit)
    assert "acts-for-player" in soft(told)  # asked about the dragon, not to light a torch
    door = Brief(kind="narration", scene=SCENE, action="> You examine the locked study door.")
    assert "acts-for-player" not in soft("You examine the door: the lock is scratched, as if forced.", door)
    assert "acts-for-player" not in soft("The butler waits. You examine the study door's lock closely.", door)
    played = "It appears there were three people. You examine the next room. You look towards a window."
    assert "acts-for-player" in soft(played, door)  # the same verb, another deed


def test_an_option_acting_on_nothing_in_the_scene_costs_but_does_not_fail():
    market = Brief(kind="option", max_words=12, scene="At your touch the fog in the jar swirls and clears. "
                                                      "The frost-haired boy has gone pale.")
    astray, there, bare = (judge(t, market) for t in ("Take off your armor.", "Buy the jar of fog.", "Look around."))
    assert astray.passed and "drift" in [f.code for f in astray.findings]
    assert "drift" not in [f.code for f in there.findings] and "drift" not in [f.code for f in bare.findings]
    assert best_first([astray, bare, there])[-1] == 0
    assert "drift" not in codes("Take off your armor.", OPTIONS)  # no scene given: nothing to hold it to
    assert "drift" not in [f.code for f in judge('Shout "Help me, anyone!"', market).findings]  # words said


def test_an_option_is_astray_only_when_none_of_its_things_is_there():
    from storyloom.modes.critic import option_astray

    scene = "The butler opens the door. From somewhere upstairs a clock strikes nine."
    assert option_astray("on the doorstep".split(), scene) == []  # door
    assert option_astray("up the stairs".split(), scene) == []  # upstairs
    assert option_astray("a moment to look around".split(), scene) == []  # names nothing
    assert option_astray("your lantern up".split(), scene) == ["lantern"]
    assert option_astray("the fire from the window".split(), scene) == ["fire", "window"]


# Co-write, played: ranked first among four candidates for "Every autumn my father picked the apples
# alone, and this year he asked me to help." (a school word problem, not story).
QUIZZES = [
    "He was right. The fruit that grew on him in July is the most famous apple in history. The tree "
    "produces more than 500 pounds of apples each year. If you have a 21-year-old man's weight how much "
    "does he need?",
    "My father filled three baskets with apples. Each basket held 12 apples. How many apples did he pick in all?",
    "The orchard had forty trees in each row. Calculate the number of trees in the orchard before winter.",
]
STORY_QUESTIONS = [
    "My father set the ladder against the oldest tree. How many autumns had he climbed it alone? "
    "I held the ladder while he reached for the highest apples.",
    '"How many baskets do we need?" I asked. "Twelve, if the wind leaves us the top branches," he said, '
    "and handed me the first one.",
]


@pytest.mark.parametrize("text", QUIZZES)
def test_a_word_problem_is_not_story(text):
    brief = Brief(kind="passage", scene="Every autumn my father picked the apples alone, and this year he asked me to help.")
    verdict = judge(text, brief)
    assert not verdict.passed and "quiz" in {f.code for f in verdict.findings}, verdict.explain()


@pytest.mark.parametrize("text", STORY_QUESTIONS)
def test_a_question_in_a_story_is_not_a_quiz(text):
    brief = Brief(kind="passage", scene="Every autumn my father picked the apples alone, and this year he asked me to help.")
    verdict = judge(text, brief)
    assert "quiz" not in {f.code for f in verdict.findings}, verdict.explain()
    assert verdict.passed, verdict.explain()
