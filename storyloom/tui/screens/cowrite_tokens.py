"""Token probabilities of a co-write candidate (P on the candidate list): the candidate token by
token; picking an alternative writes a new candidate from it (the text up to that token, the
alternative, a fresh continuation) on top of the offer; Ctrl+B brings back the offer before."""
from __future__ import annotations

from textual import work

from storyloom import StoryloomError
from storyloom.tui.messages import CandidatesReady, GenerationFailed, error_text
from storyloom.tui.screens.generating import Stopped
from storyloom.tui.screens.token_probs import TokenProbsScreen, TokensReady


class CowriteTokens:
    """For CowriteScreen: needs play, start_work/end_work, model_turn and its candidate list."""

    def action_candidate_tokens(self) -> None:
        from storyloom.tui.screens.cowrite import CandidateList

        menu = self.query_one(CandidateList)
        if not self._idle() or menu.highlighted is None or not self.play.story.pending:
            return
        generator = self.app.generator
        if generator is not None and not generator.capabilities.token_logprobs:
            self.notify(f"{generator.name} does not give token probabilities.", markup=False)
            return
        self.start_work()
        self.app.activity = "reading token probabilities… (Esc stops)"
        self._read_candidate_tokens(menu.highlighted)

    @work(thread=True, exclusive=True, group="cowrite", exit_on_error=False)
    def _read_candidate_tokens(self, index: int) -> None:
        try:
            with self.model_turn() as generator:
                choices = self.play.candidate_tokens(index, generator, self.app.config.sampler)
        except Stopped:
            self.post_message(TokensReady([], index))
            return
        except Exception as exc:  # noqa: BLE001 - shown, the story is kept
            self.post_message(GenerationFailed(error_text(exc)))
            return
        self.post_message(TokensReady(choices, index))

    def on_tokens_ready(self, message: TokensReady) -> None:
        self._done()
        if not message.choices:
            return
        text = self.play.story.pending[message.index].text

        def picked(choice) -> None:
            if not choice:
                return
            if message.index >= len(self.play.story.pending) or self.play.story.pending[message.index].text != text:
                self.notify("The candidates changed; open the token view again.")
                return
            token, alternative = choice
            self.start_work()
            self._continue_candidate(message.index, text[: message.choices[token].start] + alternative)

        self.app.push_screen(TokenProbsScreen(message.choices, f"Candidate {message.index + 1}"), picked)

    @work(thread=True, exclusive=True, group="cowrite", exit_on_error=False)
    def _continue_candidate(self, index: int, prefix: str) -> None:
        try:
            with self.model_turn() as generator:
                new = self.play.continue_candidate(index, prefix, generator, self.app.config.sampler, self.cancel)
        except Stopped:
            self.post_message(CandidatesReady([], True, False, 0.0))
            return
        except (StoryloomError, Exception) as exc:  # noqa: BLE001
            self.post_message(GenerationFailed(error_text(exc)))
            return
        if new is None:
            self.post_message(CandidatesReady([], True, False, 0.0))
            return
        # a new offer with it on top: the screen's usual handler shows it (replaces=True keeps Ctrl+B)
        self.post_message(CandidatesReady([new, *[c for c in self.play.story.pending if c.text != new.text]],
                                          False, False, generator.last_stats.tokens_per_second))
