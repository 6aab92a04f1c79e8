"""Shared test fixtures: everything offline, tiny random models and a byte-level tokenizer built in
memory."""

from __future__ import annotations

import os

# before transformers / datasets / huggingface_hub are imported anywhere: they read these at import
# time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# The test folders mirror the package; their modules share tiny models and helpers by module name
# (``from test_replay import _medusa``) whichever folder they sit in, so every folder is importable.
for _folder in sorted(Path(__file__).resolve().parent.iterdir()):
    if _folder.is_dir() and any(_folder.glob("*.py")) and str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import pytest  # noqa: E402
import torch  # noqa: E402

@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The CLI sets torch's thread count (--threads) in-process; later tests keep the count they
    started with, since a different count changes the last bits of CPU matmuls."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


TRAIN_TEXT = [
    (
        "You are an AI assistant whose purpose is to perform translation. Given the following"
        " sentence in Hindi, translate it to English:\n\ncompletion:"
    ),
    "उन्होंने कहा कि अब हमारे पास चार महीने उम्र वाले चूहे हैं।",
    "We now have four month old mice that are not diabetic, he added.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
]
SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained in memory: encodes any text (Hindi too) with no download.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(kind: str = "llama", vocab_size: int = 400, **overrides):
    """Small random configs; GQA (4 query heads on 2 KV heads) unless overridden."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    common.update(overrides)
    return {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[kind](**common)


def make_model(kind: str = "llama", seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, **overrides))
    # random init of this size is near-uniform; sharpen it so greedy paths vary
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else None
    return model.eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny Llama + tokenizer folder, usable as --model-name."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_model().save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def perturbed_heads(tiny_model_dir, folder: Path, num_heads: int, seed: int) -> Path:
    """``num_heads`` lightly perturbed shared-projection heads on the tiny Llama, saved in
    ``folder`` (drafts differ from greedy, so the Medusa strategies do work)."""
    from transformers import AutoModelForCausalLM

    from medusa.model.checkpoints import save_heads
    from medusa.model.heads import HeadConfig, MedusaHeads

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir).get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(num_heads, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True), lm
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for block in heads.heads:
            block[0].linear.weight.normal_(0, 0.05)
    save_heads(heads, folder, str(tiny_model_dir))
    return folder


@pytest.fixture(scope="session")
def student_heads_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """For the submission tests: 3 perturbed heads."""
    return perturbed_heads(tiny_model_dir, tmp_path_factory.mktemp("student-heads"), 3, seed=0)


def make_tiny_adapter(model_dir: Path, folder: Path) -> Path:
    """A one-step LoRA translator for the tiny model in ``folder/adapter`` (its data in
    ``folder/par``): what heads trained for the embedded default come with."""
    from medusa.training.finetune import FinetuneSettings, finetune

    data = folder / "par"
    data.mkdir()
    (data / "train.hin_Deva").write_text("मैं घर जा रहा हूँ\nवह किताब पढ़ती है\n" * 4)
    (data / "train.eng_Latn").write_text("I am going home\nShe reads a book\n" * 4)
    finetune(
        FinetuneSettings(
            model_name=str(model_dir),
            train_data=[str(data / "train")],
            rank=2,
            epochs=1,
            batch_size=8,
            output_dir=str(folder / "adapter"),
            device="cpu",
            max_input_len=64,
        )
    )
    return folder / "adapter"
