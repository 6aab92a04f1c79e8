"""An example course submission to try the grader on (``--generator
docs/example_submission.py:MedusaTextGenerator``).

Written the way course submissions are, against FasterDecoding's library: the
``medusa.model.medusa_model`` import, ``model(input_ids, past_key_values=..., use_cache=True)`` for
single-head, and ``model.model`` / ``model.lm_head`` / ``model.medusa_head`` for multi-head (heads
draft, one forward checks the draft, the base model's tokens are kept: lossless, so it should agree
with our greedy multi-head token for token).
"""

import torch
from jaxtyping import Int

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
        self.eos_token_id = eos_id
        self.no_heads = use_no_medusa_heads
        self.max_output_len = max_output_len
        single = decoding_strategy == "single-head"
        self.generator_func = self.single_head_decoding if single else self.multi_head_decoding

    def __call__(
        self, input_ids: Int[torch.Tensor, "batch in_seq_len"]
    ) -> Int[torch.Tensor, "out_seq_len"]:
        return self.generator_func(input_ids)

    def single_head_decoding(self, input_ids):
        generated, past, feed = [], None, input_ids
        while len(generated) < self.max_output_len:
            outputs = self.model(feed, past_key_values=past, use_cache=True)
            past = outputs.past_key_values
            token = int(outputs.logits[0, -1].argmax())
            if token == self.eos_token_id:
                break
            generated.append(token)
            feed = torch.tensor([[token]], device=input_ids.device)
        return torch.tensor(generated, dtype=torch.long)

    def multi_head_decoding(self, input_ids):
        generated = []
        hidden = self.model.model(input_ids).last_hidden_state[:, -1]
        while len(generated) < self.max_output_len:
            draft = [int(self.model.lm_head(hidden).argmax())]
            draft += [int(self.model.medusa_head[k](hidden).argmax()) for k in range(self.no_heads)]
            start = input_ids.shape[1]
            candidate = torch.cat(
                [input_ids, torch.tensor([draft], device=input_ids.device)], dim=1
            )
            # one state per draft token
            states = self.model.model(candidate).last_hidden_state[0, start:]
            predicted = self.model.lm_head(states[:-1]).argmax(-1).tolist()
            accepted = [draft[0]]
            # keep head tokens while the base model would have chosen them
            for i in range(1, len(draft)):
                if predicted[i - 1] != draft[i]:
                    break
                accepted.append(draft[i])
            for token in accepted:
                if token == self.eos_token_id or len(generated) == self.max_output_len:
                    return torch.tensor(generated, dtype=torch.long)
                generated.append(token)
            input_ids = torch.cat(
                [input_ids, torch.tensor([accepted], device=input_ids.device)], dim=1
            )
            hidden = states[len(accepted) - 1 : len(accepted)]
        return torch.tensor(generated, dtype=torch.long)


class ReturnsThePromptToo(MedusaTextGenerator):
    """The seed script's own bug, for the report to flag: the prompt comes back with the output, as
    a [1, T] batch."""

    def __call__(self, input_ids):
        return torch.cat(
            [input_ids, self.generator_func(input_ids)[None].to(input_ids.device)], dim=1
        )
