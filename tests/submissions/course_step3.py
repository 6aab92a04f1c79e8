"""A course solution of our own, written only against FasterDecoding's API (the
``medusa.model.medusa_model`` import, ``model.model``, ``model.lm_head``, ``model.medusa_head[k]``
and the plain forward), as the course describes it:

- single-head: greedy decoding with the LM head;
- multi-head: one forward over the sequence gives the base model's distribution and each head's; a
beam search of
  width W over those S + 1 distributions gives W candidates of S + 1 tokens; the base model scores
  every candidate in one batched forward (sum of its tokens' log-probabilities); the best candidate
  is appended whole; repeat until EOS or ``max_output_len`` (the output is cut there).

No KV cache: every step runs the whole sequence, the simplest correct solution.
"""

import torch

from medusa.model.medusa_model import MedusaModel


class MedusaTextGenerator:

    def __init__(
        self,
        model: MedusaModel,
        decoding_strategy: str,
        eos_id: int,
        use_no_medusa_heads: int = 5,
        beam_width: int = 2,
        max_output_len: int = 10,
    ) -> None:
        self.model = model
        self.eos_id = eos_id
        self.heads = use_no_medusa_heads
        self.width = beam_width
        self.max_output_len = max_output_len
        self.multi = decoding_strategy == "multi-head"

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.multi_head(input_ids) if self.multi else self.single_head(input_ids)
        return torch.tensor(out, dtype=torch.long)

    def single_head(self, seq: torch.Tensor) -> list[int]:
        out: list[int] = []
        while len(out) < self.max_output_len:
            token = int(self.model(seq).logits[0, -1].argmax())
            if token == self.eos_id:
                break
            out.append(token)
            seq = torch.cat([seq, torch.tensor([[token]], device=seq.device)], dim=1)
        return out

    def beams(self, hidden: torch.Tensor) -> list[list[int]]:
        """Step 2: W candidates of S + 1 tokens, best first, by summed log-probability over the S +
        1 levels."""
        levels = [self.model.lm_head(hidden)[0]] + [
            self.model.medusa_head[k](hidden)[0] for k in range(self.heads)
        ]
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        for logits in levels:
            values, ids = logits.float().log_softmax(-1).topk(self.width)
            grown = [
                (tokens + [int(i)], score + float(v))
                for tokens, score in beams
                for v, i in zip(values, ids)
            ]
            grown.sort(key=lambda beam: -beam[1])
            beams = grown[: self.width]
        return [tokens for tokens, _ in beams]

    def multi_head(self, seq: torch.Tensor) -> list[int]:
        out: list[int] = []
        while len(out) < self.max_output_len:
            hidden = self.model.model(seq).last_hidden_state[:, -1]
            candidates = torch.tensor(self.beams(hidden), device=seq.device)  # [W, S + 1]
            n, p = candidates.shape[0], seq.shape[1]
            logp = (
                self.model(torch.cat([seq.expand(n, -1), candidates], dim=1))
                .logits.float()
                .log_softmax(-1)
            )
            scores = (
                logp[:, p - 1 : p - 1 + candidates.shape[1]]
                .gather(-1, candidates[..., None])[..., 0]
                .sum(-1)
            )
            best = candidates[int(scores.argmax())]
            for token in best.tolist():
                if token == self.eos_id:
                    return out
                out.append(token)
                if len(out) == self.max_output_len:
                    return out
            seq = torch.cat([seq, best[None]], dim=1)
        return out


class CachedMedusaTextGenerator(MedusaTextGenerator):
    """The same algorithm with a KV cache (``model(ids, past_key_values=..., use_cache=True)``): the
    prefix is run once, and the W candidates are scored in one batched forward on copies of the
    prefix's cache."""

    def multi_head(self, seq: torch.Tensor) -> list[int]:
        import copy

        out: list[int] = []
        decoded = self.model.model(seq, use_cache=True)
        past, hidden = decoded.past_key_values, decoded.last_hidden_state[:, -1]
        while len(out) < self.max_output_len:
            base = self.model.lm_head(hidden)[0].float().log_softmax(-1)
            candidates = torch.tensor(self.beams(hidden), device=seq.device)  # [W, S + 1]
            n = candidates.shape[0]
            batch_past = copy.deepcopy(past)
            batch_past.batch_repeat_interleave(n)
            logp = (
                self.model(candidates, past_key_values=batch_past, use_cache=True)
                .logits.float()
                .log_softmax(-1)
            )
            scores = base[candidates[:, 0]] + logp[:, :-1].gather(-1, candidates[:, 1:, None])[
                ..., 0
            ].sum(-1)
            best = candidates[int(scores.argmax())]
            for token in best.tolist():
                if token == self.eos_id:
                    return out
                out.append(token)
                if len(out) == self.max_output_len:
                    return out
            decoded = self.model.model(best[None], past_key_values=past, use_cache=True)
            past, hidden = decoded.past_key_values, decoded.last_hidden_state[:, -1]
        return out
