"""The one interface every decoding strategy implements: draft a token tree, then accept a path of
it.

The loop in :mod:`medusa.decoding.loop` owns everything else (prefill, one verify forward per step,
cache update, stop rules), so a strategy is only its drafting and acceptance rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from medusa.decoding.fixed_tree import DevicePlan
from medusa.errors import MedusaError

if TYPE_CHECKING:
    from medusa.decoding import DecodeSettings
    from medusa.decoding.sampling import Sampler


@dataclass
class Tree:
    """Draft tokens as a forest in topological order: ``parents[i] < i``, or -1 for a first-level
    node.

    First-level nodes continue the committed sequence; a node's depth decides its position id.
    """

    tokens: list[int]
    parents: list[int]
    # the drafted candidates' last nodes, when the drafter has candidates
    leaves: list[int] | None = None

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.parents) or not self.tokens:
            raise ValueError("a tree needs one parent per token and at least one token")
        depths: list[int] = []
        for i, p in enumerate(self.parents):
            if not -1 <= p < i:
                raise ValueError(f"node {i} has parent {p}: parents must precede their children")
            depths.append(0 if p < 0 else depths[p] + 1)
        # computed once: the loop, verify and acceptance all read it every step
        self.depths = depths

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        """A single path from one first-level node: plain causal attention suffices, no tree mask.
        """
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def path_to(self, node: int) -> list[int]:
        path = []
        while node >= 0:
            path.append(node)
            node = self.parents[node]
        return path[::-1]


@dataclass
class DecodeState:
    """What a strategy may look at: base/head logits after the last committed token, and the output
    so far."""

    logits: torch.Tensor  # [V] base logits predicting the next token
    head_logits: torch.Tensor | None  # [K, V]: head k predicts the token k+1 after the next one
    generated: list[int] = field(default_factory=list)
    _argmax: int | None = None
    # sequential heads: head d's logits [N, V] below each path [N, d+1] of draft tokens (t_0 = the
    # next token);
    # None for heads that do not look at the path (``head_logits`` says everything then)
    level_logits: Callable[[torch.Tensor], torch.Tensor] | None = None
    # a token drawn at this state (sampling), kept so that every rule that asks gets the same one
    drawn: int | None = None

    def argmax(self) -> int:
        """The base model's greedy next token; cached, since several rules ask and each ask syncs a
        GPU."""
        if self._argmax is None:
            self._argmax = int(self.logits.argmax())
        return self._argmax

    def advance(self, logits: torch.Tensor, head_logits: torch.Tensor | None,
                level_logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
                drawn: int | None = None) -> None:
        self.logits, self.head_logits, self._argmax = logits, head_logits, None
        self.level_logits, self.drawn = level_logits, drawn


@dataclass
class Verified:
    """Output of the verify forward for each tree node: base logits [N, V] and last hidden states
    [N, H].

    Head logits are computed afterwards, for the accepted path's last node only: K vocabulary
    projections instead of K × N.
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    # [N] the draft tokens on the model's device, shared by verify and acceptance
    tokens: torch.Tensor
    # sampling: the token drawn after the accepted path, the next step's first token
    bonus: int | None = None


@dataclass
class GenerationResult:
    """Generated ids (stop token excluded) with per-step acceptance counts."""

    tokens: list[int]
    accepted_per_step: list[int]
    stop_reason: str  # "eos" | "length"
    drafted_depth_per_step: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.accepted_per_step)


class Strategy(ABC):
    """Drafting + acceptance rule. ``num_heads`` is how many head distributions the loop must
    compute.

    A strategy is one class registered by name in :data:`medusa.decoding.STRATEGY_CLASSES`; the
    class methods below let the commands build it from settings and name it in tables and reports,
    so nothing dispatches on its name."""

    name: str = ""
    num_heads: int = 0
    uses_heads = True  # it drafts with the heads: -nmh and the acceptance rule apply
    uses_beams = False  # it drafts beams: --beam-width applies
    samples = False  # it decodes at --temperature above 0 (medusa/decoding/sampling.py)
    # a sampled decode's draws (the acceptance rule's); None at temperature 0
    sampler: "Sampler | None" = None
    # measure/replay.py can replay it under greedy acceptance (its draft reads only the state)
    replayable = False
    # the deepest rank of a head's ranked list its drafts read (replay measures at least that many)
    max_rank = 0
    # path-dependent drafters (sequential heads, the autoregressive drafter): draft depth by depth,
    # each path below
    # its own tokens. False: read each head's logits along the drafter's own greedy path, the one
    # distribution per
    # head that FasterDecoding's API (``medusa_head[k](hidden)``, ``medusa_forward``) exposes (the
    # course reference)
    by_path: bool = True

    @property
    def whole_candidates(self) -> bool:
        """Rescore's length rule, the course's: candidates are drafted whole even near the length
        limit and the output is cut there (other rules draft no deeper than the tokens still
        allowed)."""
        acceptance = getattr(self, "acceptance", None)
        return bool(acceptance is not None and acceptance.whole_candidates)

    @classmethod
    def from_settings(cls, settings: "DecodeSettings") -> "Strategy":
        """The strategy these settings describe (``settings.strategy`` names this class)."""
        return cls()

    @classmethod
    def config_name(cls, beam_width: int | None, heads: int | None) -> str:
        """A configuration's short name, as results tables and their sub-folders call it."""
        return cls.name

    @classmethod
    def table_label(cls, beam_width: int | None, heads: int | None) -> str:
        """The configuration as the course's results table writes it."""
        return cls.config_name(beam_width, heads)

    @classmethod
    def title_details(cls, settings: dict, summary: dict) -> list[str]:
        """What a report's heading says of this configuration besides its name (from
        ``summary.json``)."""
        return []

    def draft_from_ranks(self, root: int, base: tuple[torch.Tensor, torch.Tensor],
                         heads: tuple[torch.Tensor, torch.Tensor], budget: int) -> Tree:
        """The draft from ranked lists: the base's (log-probs, ids) [R] and the heads' [K, R] at one
        position, ``root`` the base's argmax there (replay's lookup, for strategies that are
        :attr:`replayable`)."""
        raise MedusaError(f"replay measures the multi-head and tree strategies, not {self.name}")

    def begin(self, prompt_ids: list[int]) -> None:
        """Called before each decode with its prompt: a sampled decode reseeds its draws."""
        if self.sampler is not None:
            self.sampler.begin(prompt_ids)

    def first_token(self, state: DecodeState) -> int | None:
        """The token this rule will surely accept first, if it is decided before verification
        (greedy)."""
        return None

    @abstractmethod
    def draft(self, state: DecodeState, budget: int) -> Tree:
        """Candidate continuations of at most ``budget`` tokens along any path."""

    @abstractmethod
    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        """Node indices of the accepted path, starting at a first-level node; never empty."""

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan | None:
        """The same drafting and acceptance as fixed-shape tensor work for the fast engine (None:
        host loop only).

        ``sequential``: the heads' logits depend on the draft path, and the plan's ``draft`` then
        receives a function ``paths [N, d+1] → head d's logits [N, V]`` where it would receive the
        head logits."""
        return None

    def depth_limit(self) -> int | None:
        """How many heads deep the next draft may go (adaptive control); None: the whole draft."""
        return None

    def observe(self, accepted: int) -> None:
        """Called with each step's accepted path length (adaptive control)."""
