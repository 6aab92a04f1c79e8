"""Which token ids end a reply: the checkpoint's EOS ids plus the end-of-turn markers chat models
really use."""

from __future__ import annotations

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def stop_token_ids(tokenizer, base_model) -> set[int]:
    """Every id that ends a reply: the configured EOS ids plus known end-of-turn markers in the
    vocabulary.

    Needed because some checkpoints name the wrong EOS (the embedded GGUF has reported
    ``<|im_start|>``), while a chat model actually ends its turn with ``<|im_end|>``.
    """
    ids: set[int] = set()
    for source in (getattr(base_model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    bos = getattr(tokenizer, "bos_token_id", None)
    if len(ids) > 1 and bos in ids and tokenizer.convert_ids_to_tokens(bos) == "<|im_start|>":
        ids.discard(bos)  # the GGUF mislabel: a turn *starts* with it
    return ids
