"""Killing the process mid-generation loses no earlier turn."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from storyloom.store.db import open_db
from storyloom.store.stories import GameStore

SCRIPT = textwrap.dedent("""
    import sys
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.engine.sampling import SamplerSettings
    from storyloom.modes.adventure import Adventure, run
    from storyloom.store.db import open_db
    from storyloom.store.stories import Game, GameStore, Turn

    store = GameStore(open_db(sys.argv[1]))
    game = Game(title="Doomed", turns=[Turn("start", "It begins.", "A bell rings.")])
    store.create(game)
    play = Adventure(game, store)
    gen = ScriptedGenerator(["The first door opens.", "The second door opens."])
    for text in ("open the first door", "open the second door"):
        turn = play.begin("do", text)
        built = play.prompt_for(turn.action, gen, SamplerSettings())
        _, turn.output = run(play.generate(built.text, turn.action, gen, SamplerSettings()))
        play.commit(turn)
    slow = ScriptedGenerator(["word " * 1000], delay=0.05)
    print("GENERATING", flush=True)
    turn = play.begin("do", "wait")
    run(play.generate("prompt", turn.action, slow, SamplerSettings(max_new_tokens=1000)))
""")


def test_sigkill_mid_generation_keeps_every_committed_turn(tmp_path):
    db_path = tmp_path / "kill.db"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "GENERATING"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    db = open_db(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    game = GameStore(db).latest()
    assert [t.output for t in game.turns] == ["A bell rings.", "The first door opens.", "The second door opens."]
