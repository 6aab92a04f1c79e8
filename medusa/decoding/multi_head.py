"""The assignment's multi-head strategy: beam search of width W over the LM head and S heads,
verified as a trie."""

from __future__ import annotations

import torch

from medusa.errors import MedusaError
from medusa.decoding.accept import Acceptance, make_acceptance
from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.draft import (
    beam_candidates,
    beam_candidates_ranked,
    beam_search,
    beam_search_by_level,
    beam_states_by_level,
    trie_from_candidates,
)
from medusa.decoding.fixed_tree import DevicePlan, FixedTree
from medusa.decoding.sampling import Sampling


class MultiHead(Strategy):
    """``by_path=False`` with rescore acceptance is the course reference (:func:`course_reference`).
    """

    name = "multi-head"
    uses_beams = True
    replayable = True
    samples = True

    @classmethod
    def from_settings(cls, settings) -> "MultiHead":
        acceptance = make_acceptance(
            settings.acceptance, settings.posterior_threshold, settings.posterior_alpha,
            Sampling(settings.temperature, settings.top_k, settings.top_p, settings.seed),
        )
        if not settings.course_reference:
            return cls(settings.num_heads, settings.beam_width, acceptance)
        if settings.acceptance != "rescore":
            raise MedusaError(
                "the course reference accepts by rescoring: it needs --acceptance rescore"
            )
        return course_reference(settings.num_heads, settings.beam_width)

    @classmethod
    def config_name(cls, beam_width: int | None, heads: int | None) -> str:
        return f"w{beam_width}-s{heads}"

    @classmethod
    def table_label(cls, beam_width: int | None, heads: int | None) -> str:
        return f"Beam {beam_width}, Medusa heads {heads}"

    @classmethod
    def title_details(cls, settings: dict, summary: dict) -> list[str]:
        return [f"W {settings['beam_width']}, S {settings['use_no_medusa_heads']}"]

    def __init__(
        self, num_heads: int, beam_width: int, acceptance: Acceptance, by_path: bool = True
    ) -> None:
        if num_heads < 1 or beam_width < 1:
            raise MedusaError("--use-no-medusa-heads and --beam-width must be at least 1")
        self.num_heads, self.beam_width, self.acceptance, self.by_path = (
            num_heads,
            beam_width,
            acceptance,
            by_path,
        )
        self.sampler = acceptance.sampler and acceptance.sampler.for_depth(num_heads)

    @property
    def is_course_reference(self) -> bool:
        return not self.by_path and self.acceptance.name == "rescore"

    def first_token(self, state: DecodeState) -> int | None:
        return self.acceptance.first_token(state)

    def draft(self, state: DecodeState, budget: int) -> Tree:
        """Sampled, every beam starts with the drawn first token (a beam from another root could
        never be accepted); greedy, sequential heads search below the argmax alone and independent
        ones search freely and keep the beams that start with it."""
        heads = min(self.num_heads, budget - 1)
        # sequential heads: each beam's next level depends on its own tokens
        if state.level_logits is not None:
            # other roots are never accepted
            root = self.acceptance.first_token(state) if self.fixed_root else None
            candidates, _ = beam_search_by_level(
                state.logits.float().log_softmax(-1),
                state.level_logits,
                heads,
                self.beam_width,
                root,
            )
            return self.acceptance.prune(state, trie_from_candidates(candidates))
        levels = [lv.float().log_softmax(-1)
                  for lv in [state.logits] + [state.head_logits[h] for h in range(heads)]]
        if self.sampler is None:
            candidates, _ = beam_candidates(levels, self.beam_width)
        else:
            root = torch.tensor([self.acceptance.first_token(state)], device=state.logits.device)
            ranked = [(torch.zeros(1, device=root.device), root)]
            ranked += [lv.topk(self.beam_width) for lv in levels[1:]]
            candidates, _ = beam_candidates_ranked(ranked, self.beam_width)
        return self.acceptance.prune(state, trie_from_candidates(candidates))

    @property
    def fixed_root(self) -> bool:
        """Greedy and sampled rules accept only paths from their first token."""
        return self.acceptance.name == "greedy" or self.sampler is not None

    def draft_ranked(self, levels: list[tuple[torch.Tensor, torch.Tensor]], budget: int) -> Tree:
        """The same trie from precomputed (log-probs, ids) per level: base first, then the heads
        (for replay)."""
        candidates, _ = beam_candidates_ranked(
            levels[: min(self.num_heads, budget - 1) + 1], self.beam_width
        )
        return trie_from_candidates(candidates)

    def draft_from_ranks(self, root, base, heads, budget):
        levels = [base] + [(heads[0][k], heads[1][k]) for k in range(self.num_heads)]
        return self.draft_ranked(levels, budget)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return self.acceptance.accept(state, tree, verified)

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan:
        """The W beams as W unmerged chains of S+1 nodes, so the node count is fixed; under greedy
        acceptance beams that do not start with the argmax are verified but never accepted (the host
        loop prunes them instead). Sequential heads under greedy acceptance search from the argmax
        alone (W beams below it), on both loops: their later levels depend on the root, so a beam
        with another root could only waste the draft.

        A depth limit d (adaptive control, the length limit) must give what the host loop drafts
        then: the beam search over d+1 levels. That is the search's own state after level d, so
        every level's beams are kept (padded to S+1) and the limit picks one.
        """
        s, w = self.num_heads, self.beam_width
        parents = [-1 if d == 0 else b * (s + 1) + d - 1 for b in range(w) for d in range(s + 1)]
        greedy = self.acceptance.name == "greedy"
        fixed, sampled = self.fixed_root, self.sampler is not None

        def draft(logits: torch.Tensor, head_logits, max_depth: torch.Tensor,
                  root: torch.Tensor) -> torch.Tensor:
            # head_logits is the per-path function: each beam extended below its own tokens
            if sequential:
                # as the host search: greedy and sampled rules search below their root only
                states = beam_states_by_level(
                    logits.float().log_softmax(-1), head_logits, s, w, root if fixed else None
                )
            else:
                levels = [lv.float().log_softmax(-1).topk(w)
                          for lv in [logits] + [head_logits[h] for h in range(s)]]
                if sampled:
                    levels[0] = (torch.zeros(1, device=root.device), root.view(1))
                states = beam_search(levels, w, keep_levels=True)
            # the root alone
            states = [seqs.expand(w, -1) if seqs.shape[0] == 1 else seqs for seqs in states]
            padded = torch.stack(
                [torch.nn.functional.pad(seqs, (0, s + 1 - seqs.shape[1])) for seqs in states]
            )
            seqs = padded.index_select(0, max_depth.view(1))[0]
            # the best beam starts with the argmax; on exact ties make sure it is that token
            # (lossless)
            if greedy:
                seqs[0, 0] = root
            return seqs.reshape(-1)

        return DevicePlan(FixedTree(parents, device), s, draft, self.acceptance.select_on_device,
                          self.acceptance.sampling)


def course_reference(num_heads: int, beam_width: int) -> MultiHead:
    """The course's multi-head algorithm exactly, as a submission written against FasterDecoding's
    API computes it: S + 1 distributions per step (the base model's and each head's as
    ``medusa_head[k](hidden)`` returns it, which for a path-dependent drafter is its own greedy
    path), a beam search of width W over them, every candidate scored by the base model in one pass,
    the best appended whole and the output cut at ``max_output_len``."""
    from medusa.decoding.accept import Rescore

    return MultiHead(num_heads, beam_width, Rescore(), by_path=False)
