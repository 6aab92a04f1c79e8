"""A strategy added in one file: this test defines one (a chain of each head's top token, as vLLM
drafts Medusa) and nothing else in the package changes. Under greedy acceptance it must decode
exactly the single-head tokens in the eager loop and in the fast engine's step (uncaptured here; the
same step the CUDA graphs replay)."""

from __future__ import annotations

import torch
from test_decoding_multi_head import prompts, with_heads

from medusa.decoding import generate, make_strategy
from medusa.decoding.accept import make_acceptance
from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.engine import EagerEngine, StaticEngine
from medusa.decoding.fixed_tree import DevicePlan, FixedTree


class TopChain(Strategy):
    """The base model's next token, then head k's top token at depth k + 1: one path, ``num_heads``
    deep."""

    name = "top-chain"

    def __init__(self, num_heads: int) -> None:
        self.num_heads = num_heads
        self.acceptance = make_acceptance("greedy")

    def first_token(self, state: DecodeState) -> int | None:
        return self.acceptance.first_token(state)

    def draft(self, state: DecodeState, budget: int) -> Tree:
        tokens = [state.argmax()] + state.head_logits[: self.num_heads].argmax(-1).tolist()
        tokens = tokens[:budget]
        return Tree(tokens, list(range(-1, len(tokens) - 1)))

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return self.acceptance.accept(state, tree, verified)

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan | None:
        if sequential:
            return None
        tree = FixedTree(list(range(-1, self.num_heads)), device)

        def draft(logits, head_logits, max_depth, root):
            return torch.cat([root[None], head_logits[: self.num_heads].argmax(-1)])

        return DevicePlan(tree, self.num_heads, draft, self.acceptance.select_on_device)


def test_a_toy_strategy_decodes_the_single_head_tokens_in_both_loops():
    model = with_heads("llama", 4, num_heads=3, noise=0.05)
    toy = TopChain(3)
    static = StaticEngine(model, capture=False)
    multi_token_steps = 0
    for prompt in prompts(3):
        for max_new, stops in ((24, set()), (17, {7, 11})):
            ref = generate(model, make_strategy("single-head"), prompt, max_new, stops)
            eager = EagerEngine(model).generate(toy, prompt, max_new, stops)
            fast = static.generate(toy, prompt, max_new, stops)
            assert eager.tokens == ref.tokens and fast.tokens == ref.tokens
            assert fast.accepted_per_step == eager.accepted_per_step
            assert fast.drafted_depth_per_step == eager.drafted_depth_per_step
            assert fast.stop_reason == eager.stop_reason == ref.stop_reason
            multi_token_steps += sum(n > 1 for n in eager.accepted_per_step)
    assert static._plan(toy).plan is not None  # the fast engine ran the toy's own device plan
    # the heads' drafts were accepted somewhere, so the chain was really verified
    assert multi_token_steps > 0
