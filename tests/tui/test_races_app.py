"""Issue 15's worker races, each driven the way a player (or a slow model) causes it."""
from __future__ import annotations

import threading


from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.tui.app import StoryloomApp
from storyloom.tui.gate import GenerationGate
from storyloom.tui.screens.editors import MemoryScreen

from tests.tui.pilot_helpers import settle, start_knight
from tests.tui.test_cowrite_app import start_story
from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree, options


class CountingGenerator(ScriptedGenerator):
    """Records how many generations ran at once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def _stream(self, prompt, settings, cancel):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            yield from super()._stream(prompt, settings, cancel)
        finally:
            with self.lock:
                self.active -= 1


async def wait_until(pilot, condition, steps: int = 200) -> None:
    for _ in range(steps):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("the condition never came true")


async def test_read_ahead_and_the_players_request_never_run_at_once_on_one_model():
    """Before: read-ahead and Ctrl+N ran two generations on one local model at the same time."""
    gen = CountingGenerator(ROOT_ACTIONS)
    app = StoryloomApp(generator_factory=lambda spec, progress: gen)
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        assert len(options(app)) == 5
        app.pregenerate = True
        gen.release.clear()  # the model is slow: read-ahead holds it
        app.screen._read_ahead()
        await wait_until(pilot, lambda: gen.active == 1)
        gen.push(*[f"You try thing {i}." for i in range(5)])
        await pilot.press("ctrl+n")  # the player asks for more options meanwhile
        await pilot.pause(0.2)
        gen.release.set()
        await settle(app, pilot)
        assert gen.peak == 1
        assert app.gate.peak == 1
        shown = options(app)
        assert len(shown) == 10  # Ctrl+N's options are shown, not only the top five
        assert any("Try thing 0." in o for o in shown)


async def test_the_player_goes_before_read_ahead_at_the_gate():
    gate = GenerationGate()
    order = []
    assert gate.acquire()
    waiting = []

    def worker(name, background):
        waiting.append(name)
        with gate.hold(background=background):
            order.append(name)

    ahead = threading.Thread(target=worker, args=("ahead", True))
    ahead.start()
    while "ahead" not in waiting:
        pass
    player = threading.Thread(target=worker, args=("player", False))
    player.start()
    while not gate.foreground_waiting:
        pass
    gate.release()
    player.join(5)
    ahead.join(5)
    assert order == ["player", "ahead"]


def test_a_cancelled_wait_at_the_gate_takes_no_slot():
    gate = GenerationGate()
    assert gate.acquire()
    cancel = threading.Event()
    cancel.set()
    assert gate.acquire(cancel=cancel) is False
    gate.release()
    assert gate.acquire(background=True)


async def test_cowrite_length_and_count_keys_wait_while_the_model_writes(make_app, fake):
    """Before: Ctrl+L / Ctrl+K changed the settings a running worker was reading."""
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_story(app, pilot, opening="The boat came at dusk.")
        story = app.screen.play.story
        length, count = story.length, story.candidates_n
        fake.release.clear()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.screen.busy)
        await pilot.press("ctrl+l", "ctrl+k")
        await pilot.pause()
        assert (story.length, story.candidates_n) == (length, count)
        assert any("Still writing" in n.message for n in app._notifications)
        fake.release.set()
        await settle(app, pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert story.length != length  # idle again: the key works


async def test_adventure_memory_editor_waits_while_the_model_writes(make_app, fake):
    """Before: Ctrl+O edited the memory a running generation was reading."""
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        fake.release.clear()
        await pilot.press(*"look around", "enter")
        await wait_until(pilot, lambda: app.screen.busy)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert not isinstance(app.screen, MemoryScreen)
        fake.release.set()
        await settle(app, pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, MemoryScreen)


async def test_switching_models_twice_quickly_keeps_the_second(storyloom_home):
    """The first, slower load finishes last; it must not replace the model chosen after it."""
    first, second, default = ScriptedGenerator(), ScriptedGenerator(), ScriptedGenerator()
    first.info.name, second.info.name = "first", "second"
    first_may_finish = threading.Event()
    first_reported = threading.Event()

    def factory(spec, progress):
        if spec == "first":
            first_may_finish.wait(10)
            progress("first: converting", 0.5)  # a stale load's progress must not show either
            first_reported.set()
            return first
        return second if spec == "second" else default

    app = StoryloomApp(generator_factory=factory)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.apply_config(app.config.with_(model="first"))
        await pilot.pause()
        app.apply_config(app.config.with_(model="second"))
        await wait_until(pilot, lambda: app.generator is second)
        first_may_finish.set()
        first_reported.wait(10)
        await settle(app, pilot)
        assert app.generator is second
        assert app.model_status == "second ready"
        assert app.model_ready.is_set()


async def test_an_adventure_turn_holds_the_gate_while_it_writes():
    """An adventure turn takes its place at the app's gate like every other generation."""
    gen = CountingGenerator(["The road is dark.", "The door opens."])
    app = StoryloomApp(generator_factory=lambda spec, progress: gen)
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        assert app.gate.peak == 1  # the opening went through the gate
        gen.release.clear()
        await pilot.press(*"open the door", "enter")
        await wait_until(pilot, lambda: gen.active == 1)
        assert not app.gate.acquire(cancel=_set_event())  # the slot is taken while it writes
        gen.release.set()
        await settle(app, pilot)
        assert "The door opens." in " ".join(t.output for t in app.screen.play.game.turns)


def _set_event():
    event = threading.Event()
    event.set()
    return event
