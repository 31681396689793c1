"""Token probabilities in adventure (Ctrl+G): the last output token by token; picking an
alternative branches that turn (its text up to the token, the alternative, a fresh continuation)
and Ctrl+Z returns to the text before. A mixin so the adventure screen gains only a binding."""
from __future__ import annotations

import threading

from textual import work

from storyloom.modes.adventure import run
from storyloom.store.stories import Turn
from storyloom.tui.messages import GenerationFailed, GenerationFinished, GenerationStarted, error_text
from storyloom.tui.screens.generating import Stopped
from storyloom.tui.screens.token_probs import TokenProbsScreen, TokensReady
from storyloom.tui.widgets.transcript import Transcript


class AdventureTokens:
    """For AdventureScreen: needs play, pending, cancel, model_turn, _post_event and its handlers."""

    def action_token_probs(self) -> None:
        if not self._idle():
            return
        turn = self.play.game.turns[-1]
        generator = self.app.generator
        if not turn.output:
            self.notify("The last turn has no text yet.")
            return
        if generator is not None and not generator.capabilities.token_logprobs:
            self.notify(f"{generator.name} does not give token probabilities.", markup=False)
            return
        self.pending = ("tokens", turn)
        self.cancel = threading.Event()
        self.app.activity = "reading token probabilities… (Esc stops)"
        self._read_tokens()

    @work(thread=True, exclusive=True, group="tokens", exit_on_error=False)
    def _read_tokens(self) -> None:
        try:
            with self.model_turn() as generator:
                choices = self.play.token_choices(generator, self.app.config.sampler)
        except Stopped:
            self.post_message(GenerationFinished("", True, 0.0))
            return
        except Exception as exc:  # noqa: BLE001 - shown, the game is kept
            self.post_message(GenerationFailed(error_text(exc)))
            return
        self.post_message(TokensReady(choices))

    def on_tokens_ready(self, message: TokensReady) -> None:
        self.pending = None
        self.app.activity = ""
        if not message.choices:
            self.notify("The last turn has no text to look at.")
            return
        output = self.play.game.turns[-1].output
        self.app.push_screen(TokenProbsScreen(message.choices, "Last output"),
                             lambda picked: picked and self._branch(output, message.choices, *picked))

    def _branch(self, output: str, choices: list, index: int, alternative: str) -> None:
        turn = self.play.game.turns[-1]
        if turn.output != output:  # changed meanwhile: the offsets would not fit
            self.notify("The text changed; open the token view again.")
            return
        prefix = output[: choices[index].start] + alternative
        self.pending = ("branch", turn)
        self.cancel = threading.Event()
        transcript = self.query_one(Transcript)
        shown = transcript.query(".turn")
        if shown:
            shown.last().remove()  # the live block takes its place
        transcript.start_live(Turn(turn.kind, turn.action, ""))
        transcript.append_live(prefix)
        self._continue_branch(prefix)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _continue_branch(self, prefix: str) -> None:
        try:
            with self.model_turn() as generator:
                settings = self.app.config.sampler
                prompt = self.play.last_turn_prompt(generator, settings)
                self.post_message(GenerationStarted(generator.count_tokens(prompt + prefix),
                                                    self.play.budget(generator.context_length, settings)))
                _, output = run(self.play.continue_from(prefix, generator, settings, self.cancel),
                                on_event=self._post_event)
        except Stopped:
            self.post_message(GenerationFinished("", True, 0.0))
            return
        except Exception as exc:  # noqa: BLE001
            self.post_message(GenerationFailed(error_text(exc)))
            return
        self.post_message(GenerationFinished(output, self.cancel.is_set(), generator.last_stats.tokens_per_second))
