"""Save a random-weight Llama of a real shape with lightly perturbed Medusa heads, as two folders
the command line loads (``-m OUT/heads``): for checks that need a model's size, not its skill, such
as ``--device-map auto`` across GPUs on a Llama-2-7B shape (tools/gpu/multi_gpu.sh). The tokenizer
is a small byte-level BPE padded with filler tokens up to the shape's vocabulary, so every token id
the random model emits decodes.

    python tools/make_random_model.py --shape llama-2-7b --out rand7b [--heads 5] [--dtype bfloat16]
    # -> rand7b/base (config, safetensors, tokenizer) and rand7b/heads (the heads; -m this one)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# hidden, intermediate, layers, attention heads, KV heads, vocabulary (tools/bench_decode.py's
# shapes)
SHAPES = {
    "llama-2-7b": (4096, 11008, 32, 32, 32, 32000),
    "llama-2-13b": (5120, 13824, 40, 40, 40, 32000),
    "small": (512, 1376, 8, 8, 8, 1000),
    "tiny": (64, 128, 4, 4, 2, 1000),
}
TEXT = [
    "उन्होंने कहा कि अब हमारे पास चार महीने उम्र वाले चूहे हैं जो पहले मधुमेह से ग्रस्त थे।",
    (
        "We now have four month old mice that are not diabetic, he added. The quick brown fox."
        " 0123456789"
    ),
]


def tokenizer_for(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab, 600),
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )
    fast.add_tokens([f"<filler_{i}>" for i in range(vocab - len(fast))])
    return fast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="llama-2-7b")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--heads", type=int, default=5)
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="as saved (bfloat16 halves the disk); --dtype float32 at load gives the fp32 model",
    )
    args = p.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    from medusa.model.checkpoints import save_heads
    from medusa.model.heads import HeadConfig, MedusaHeads

    h, inter, layers, heads, kv, vocab = SHAPES[args.shape]
    config = LlamaConfig(
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        base = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    base_dir, heads_dir = args.out / "base", args.out / "heads"
    base.save_pretrained(base_dir)
    tokenizer_for(vocab).save_pretrained(base_dir)
    lm = base.get_output_embeddings()
    medusa = MedusaHeads(HeadConfig(args.heads, 1, h, vocab, shared_lm_head=True), lm).to(
        lm.weight.device
    )
    # identity heads would only repeat the next token; a little noise makes drafts differ
    with torch.no_grad():
        for block in medusa.heads:
            block[0].linear.weight.normal_(0, 0.02)
    save_heads(medusa.to(lm.weight.dtype), heads_dir, str(base_dir))
    print(f"{args.shape}: base {base_dir}, heads {heads_dir} (use -m {heads_dir})")


if __name__ == "__main__":
    main()
