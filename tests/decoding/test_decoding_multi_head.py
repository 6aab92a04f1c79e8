"""Multi-head decoding: greedy acceptance is lossless; typical and rescore equal brute-force
references."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import make_model

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.draft import beam_candidates, trie_from_candidates
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.model import MedusaModel


def with_heads(
    kind: str, seed: int, num_heads: int = 4, noise: float = 0.0, **overrides
) -> MedusaModel:
    """A tiny model plus heads: identity heads (noise=0) repeat the base prediction, noise makes
    them differ."""
    base = make_model(kind, seed=seed, **overrides)
    lm = base.get_output_embeddings()
    shared = seed % 2 == 0
    heads = MedusaHeads(
        HeadConfig(num_heads, 1, lm.weight.shape[1], lm.weight.shape[0], shared), lm
    )
    if noise:
        torch.manual_seed(seed + 100)
        with torch.no_grad():
            for block in heads.heads:
                block[0].linear.weight.normal_(0, noise)
    return MedusaModel(base, tokenizer=None, heads=heads)


def prompts(seed: int, n: int = 3) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(3, 400, (int(torch.randint(2, 30, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "kind,seed,overrides",
    [
        ("llama", 0, {}),
        ("llama", 1, {"tie_word_embeddings": True}),
        ("llama", 2, {"num_key_value_heads": 1}),
        ("qwen2", 3, {}),
    ],
)
@pytest.mark.parametrize("width,heads", [(1, 1), (2, 2), (3, 4)])
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_greedy_multi_head_is_token_identical_to_single_head(
    kind, seed, overrides, width, heads, noise
):
    model = with_heads(kind, seed, noise=noise, **overrides)
    multi = make_strategy(DecodeSettings("multi-head", heads, width, "greedy"))
    for prompt in prompts(seed):
        ref = generate(model, make_strategy("single-head"), prompt, 40, set())
        got = generate(model, multi, prompt, 40, set())
        assert got.tokens == ref.tokens
        assert sum(got.accepted_per_step) == len(got.tokens)
        assert max(got.accepted_per_step) <= heads + 1


def test_greedy_accepts_more_than_one_token_when_heads_are_right():
    # identity heads predict "the same token again": right whenever the model repeats itself, which
    # tiny
    # random models do — so this configuration must show steps with more than one accepted token
    accepted = []
    for seed in range(4):
        model = with_heads("llama", seed)
        for prompt in prompts(seed):
            accepted += generate(
                model, make_strategy(DecodeSettings("multi-head", 3, 2)), prompt, 40, set()
            ).accepted_per_step
    assert max(accepted) > 1


def test_stop_token_inside_accepted_draft():
    model = with_heads("llama", 0)
    prompt = prompts(0)[0]
    free = generate(model, make_strategy("single-head"), prompt, 40, set()).tokens
    eos = free[10]
    ref = generate(model, make_strategy("single-head"), prompt, 40, {eos})
    got = generate(model, make_strategy(DecodeSettings("multi-head", 4, 3)), prompt, 40, {eos})
    assert got.tokens == ref.tokens and got.stop_reason == "eos"


# ---- brute-force references: plain forwards over whole sequences, no cache, no tree mask ----

@torch.no_grad()
def plain_distributions(model: MedusaModel, seq: list[int], num_heads: int):
    out = model.step(torch.tensor([seq]), None, num_heads=num_heads)
    return out.logits[0, -1].float(), out.head_logits[:, 0, -1].float()


@torch.no_grad()
def plain_next_logprobs(model: MedusaModel, seq: list[int]) -> torch.Tensor:
    return model.base_model(torch.tensor([seq])).logits[0, -1].float().log_softmax(-1)


def brute_beams(levels: list[torch.Tensor], width: int) -> list[list[int]]:
    """All combinations of the top-W tokens per level, the W best by summed log-prob."""
    tops = [lp.topk(width) for lp in levels]
    combos = []
    for choice in itertools.product(range(width), repeat=len(levels)):
        score = sum(float(t.values[c]) for t, c in zip(tops, choice))
        combos.append((score, [int(t.indices[c]) for t, c in zip(tops, choice)]))
    combos.sort(key=lambda x: -x[0])
    return [c for _, c in combos[:width]]


def path_logprob(model, seq, tokens) -> list[float]:
    return [
        float(plain_next_logprobs(model, seq + tokens[:i])[tokens[i]]) for i in range(len(tokens))
    ]


def reference_decode(model, prompt, heads, width, max_new, rule, eps=0.09, alpha=0.3) -> list[int]:
    seq, out = list(prompt), []
    while len(out) < max_new:
        base, head = plain_distributions(model, seq, heads)
        depth = min(heads, max_new - len(out) - 1)
        levels = [base.log_softmax(-1)] + [head[h].log_softmax(-1) for h in range(depth)]
        cands = brute_beams(levels, width)
        if rule == "rescore":
            best = max(cands, key=lambda c: sum(path_logprob(model, seq, c)))
        # typical: every prefix of every candidate, longest fully-passing one, ties by summed
        # log-prob
        else:
            best, best_key = None, None
            prefixes = {tuple(c[:d]) for c in cands for d in range(1, len(c) + 1)}
            for pre in prefixes:
                ok = True
                for i in range(len(pre)):
                    lp = plain_next_logprobs(model, seq + list(pre[:i]))
                    h = -(lp.exp() * lp).sum()
                    if not lp[pre[i]].exp() > min(eps, alpha * torch.exp(-h)):
                        ok = False
                        break
                if ok:
                    key = (len(pre), sum(path_logprob(model, seq, list(pre))))
                    if best_key is None or key > best_key:
                        best, best_key = list(pre), key
        take = best[: max_new - len(out)]
        out += take
        seq += take
    return out


@pytest.mark.parametrize("rule", ["rescore", "typical"])
@pytest.mark.parametrize("seed,width,heads", [(0, 2, 2), (1, 3, 2), (2, 2, 3)])
def test_rule_equals_brute_force_reference(rule, seed, width, heads):
    model = with_heads("llama", seed, noise=0.3, tie_word_embeddings=seed == 1)
    strategy = make_strategy(DecodeSettings("multi-head", heads, width, rule))
    for prompt in prompts(seed, n=2):
        got = generate(model, strategy, prompt, 12, set()).tokens
        assert got == reference_decode(model, prompt, heads, width, 12, rule)


def test_beam_search_equals_exhaustive_top_w():
    g = torch.Generator().manual_seed(3)
    levels = [torch.randn(50, generator=g).log_softmax(-1) for _ in range(3)]
    for width in (1, 2, 4):
        seqs, scores = beam_candidates(levels, width)
        assert seqs == brute_beams(levels, width)
        assert scores == sorted(scores, reverse=True)


def test_trie_merges_shared_prefixes():
    tree = trie_from_candidates([[5, 6, 7], [5, 6, 8], [5, 9, 7], [4, 6, 7]])
    assert tree.tokens == [5, 6, 7, 8, 9, 7, 4, 6, 7]
    assert tree.parents == [-1, 0, 1, 1, 0, 4, -1, 6, 7]
    assert tree.leaves == [2, 3, 5, 8]


def test_bad_settings():
    with pytest.raises(MedusaError):
        make_strategy(DecodeSettings("multi-head", 2, 0))
    with pytest.raises(MedusaError):
        make_strategy(DecodeSettings("multi-head", 2, 2, "sometimes"))


def test_greedy_prune_keeps_only_the_argmax_subtree():
    from medusa.decoding.accept import Greedy
    from medusa.decoding.base import DecodeState

    logits = torch.full((10,), -5.0)
    logits[4] = 3.0  # argmax 4
    tree = trie_from_candidates([[5, 6, 7], [4, 6, 8], [4, 9, 7], [3, 6, 7]])
    pruned = Greedy().prune(DecodeState(logits, None), tree)
    assert pruned.tokens == [4, 6, 8, 9, 7]
    assert pruned.parents == [-1, 0, 1, 0, 3]
    assert pruned.leaves == [2, 4]


def test_greedy_prune_falls_back_to_the_argmax_alone():
    # bf16 rounding can tie the top two first tokens, and beam search may then keep only the other
    # one
    from medusa.decoding.accept import Greedy
    from medusa.decoding.base import DecodeState

    logits = torch.full((10,), -5.0)
    logits[4] = 3.0
    tree = trie_from_candidates([[5, 6, 7], [5, 6, 8]])
    pruned = Greedy().prune(DecodeState(logits, None), tree)
    assert (pruned.tokens, pruned.parents, pruned.leaves) == ([4], [-1], [0])


def test_cache_after_every_step_equals_a_fresh_forward(monkeypatch):
    """Spy on the loop: after each accept + cache update, the KV cache must match a plain prefill of
    the sequence."""
    import medusa.decoding.stepper as loop  # the eager step calls verify and keep_path
    from medusa.decoding.cache import new_cache

    model = with_heads("llama", 2, num_heads=3, noise=0.0, num_key_value_heads=1)
    prompt = prompts(2)[0]
    committed = list(prompt)
    seen = {}
    checked = []
    real_verify, real_keep = loop.verify, loop.keep_path

    def spy_verify(m, cache, prefix_len, tree):
        seen["tree"] = tree
        return real_verify(m, cache, prefix_len, tree)

    def spy_keep(cache, prefix_len, path):
        real_keep(cache, prefix_len, path)
        committed.extend(seen["tree"].tokens[i] for i in path)
        fresh = new_cache(model.base_model)
        model.step(torch.tensor([committed]), fresh)
        for mine, ref in zip(cache.layers, fresh.layers):
            torch.testing.assert_close(mine.keys, ref.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mine.values, ref.values, atol=1e-5, rtol=1e-5)
        checked.append(len(path))

    monkeypatch.setattr(loop, "verify", spy_verify)
    monkeypatch.setattr(loop, "keep_path", spy_keep)
    generate(model, make_strategy(DecodeSettings("tree", 3)), prompt, 30, set())
    assert len(checked) > 5 and max(checked) > 1  # several steps, some accepting drafts


def test_fasterdecoding_style_student_generator_runs_on_our_model():
    """Code written against FasterDecoding's API (the course's starter code) runs unchanged on
    MedusaModel."""
    model = with_heads("llama", 4, num_heads=3, noise=0.2)

    class StudentSingleHead:  # the shape of a student's MedusaTextGenerator, no cache
        def __init__(self, model, eos_id, max_output_len):
            self.model, self.eos_id, self.max_output_len = model, eos_id, max_output_len

        def __call__(self, input_ids):
            out = []
            for _ in range(self.max_output_len):
                medusa_logits, outputs, orig = self.model(
                    input_ids, medusa_forward=True, output_orig=True
                )
                assert medusa_logits.shape[:2] == (3, 1) and orig.shape[:2] == (
                    1,
                    input_ids.shape[1],
                )
                nxt = int(orig[0, -1].argmax())
                if nxt == self.eos_id:
                    break
                out.append(nxt)
                input_ids = torch.cat([input_ids, torch.tensor([[nxt]])], dim=1)
            return torch.tensor(out)

    prompt = prompts(4)[0]
    student = StudentSingleHead(model, eos_id=-1, max_output_len=15)(torch.tensor([prompt]))
    assert student.shape == (15,)
    assert (
        student.tolist() == generate(model, make_strategy("single-head"), prompt, 15, set()).tokens
    )
    assert len(model.medusa_head) == 3 and model.get_tokenizer() is None
