"""Command line: the seed's flags (and their short aliases) plus the project's own; errors are one
line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dataclasses import replace

from medusa.console import say
from medusa.decoding import ACCEPTANCE_RULES, ENGINES, STRATEGIES, DecodeSettings
from medusa.evaluation.data_spec import DataSpec
from medusa.model.model_spec import ModelSpec
from medusa.runtime.distributed import end_processes, processes
from medusa.model.embedded import EMBEDDED_NAME, FAITHFUL_NAME, TRANSLATORS, is_embedded
from medusa.model.loader import LoadSettings, check_shipped
from medusa.errors import MedusaError
from medusa.model.hub import fail_fast_offline
from medusa.output_dir import claimed_folder
from medusa.settings import CPU_DEMO_TREE_SIZE, SETUPS, RunSettings
from medusa.arg_types import (NON_NEGATIVE, NON_NEGATIVE_COUNT, SEED, checked_number, positive_int,
                              probability, settings_from_namespace)
from medusa.runtime.threads import apply_threads, threads_arg

DESCRIPTION = (
    "Evaluate Medusa parallel decoding on Indic→English translation. With no flags: the embedded"
    " SmolLM2 model on the shipped FLORES-200 sample, offline. With --hf-token alone: the seed"
    " protocol (FasterDecoding/medusa-v1.0-vicuna-7b-v1.5 on ai4bharat/IN22-Gen)."
)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage + error; we print one line that says what to do."""

    def error(self, message: str) -> None:  # type: ignore[override]
        say(f"error: {message} (see python {self.prog} --help)")  # a subcommand's prog names it
        sys.exit(2)


# every subcommand main() dispatches (SUBCOMMANDS below), as --help lists them
SUBCOMMAND_HELP = {
    "calibrate-tree": "build a tree for your model and data",
    "measure-acceptance": "per-head accuracy and τ of every strategy on whole datasets",
    "train-heads": "train heads for your model",
    "finetune": "LoRA-fine-tune a base model",
}


def subcommands_epilog() -> str:
    """One line per subcommand, never wrapped inside a hyphenated name."""
    return "subcommands (each has its own --help):\n" + "\n".join(
        f"  python medusa.py {name:<20} {text}" for name, text in SUBCOMMAND_HELP.items())


# the main run's own words for shared flags (the specs' texts serve the subcommands)
MAIN_HELPS = {
    "hf_token": "Hugging Face token (or env HF_TOKEN); given as a flag with nothing else, it "
    "selects the seed protocol",
    "model_name": f"hub id, local folder, .gguf file or '{EMBEDDED_NAME}' (default depends on "
    "--setup)",
    "medusa_heads": "heads to put on the base model (folder, file or hub id)",
    "adapter": "a LoRA adapter folder (from `finetune`) merged at load",
    "prompt_style": "seed = the course's prompt; chat = the tokenizer's chat template; auto = "
    "seed for the seed setup, else chat when the tokenizer has a chat template and seed when it "
    "has none",
    "dtype": "auto = float32 on CPU; on CUDA float32 for models under 500M parameters (exact: "
    "greedy Medusa = single-head; bfloat16 is faster under the graphs engine but flips "
    "near-ties), else the checkpoint's half type (else bfloat16)",
}


def build_parser() -> argparse.ArgumentParser:
    """The main run's flags: the seed's group, then the project's own."""
    import textwrap

    p = OneLineParser(
        prog="medusa.py",
        description=textwrap.fill(DESCRIPTION, 100, break_on_hyphens=False),
        allow_abbrev=False,
        epilog=subcommands_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = replace(RunSettings(), model_name=None, dataset=None)  # None: the --setup's
    seed, more = p.add_argument_group("the seed's flags"), p.add_argument_group("more")
    add_seed_flags(seed, defaults)
    add_strategy_flags(more)
    add_grading_flags(more)
    add_typical_and_setup_flags(more)
    add_model_and_data_flags(more, defaults)
    add_run_flags(more)
    return p


def add_seed_flags(seed, defaults: RunSettings) -> None:
    """The seed script's flags, with its short aliases."""
    d = DecodeSettings()
    ModelSpec.add_arguments(seed, defaults, MAIN_HELPS, only=("hf_token",))
    seed.add_argument(
        "--decoding-strategy",
        "-ds",
        default=None,
        choices=list(STRATEGIES),
        help=(
            "single-head (greedy, LM head only), multi-head (beam search over the heads, verified"
            " as a trie) or tree (a static sparse tree of top-k head choices); default"
            " single-head, except on the embedded model with its shipped drafter: the demo,"
            " single-head and the tree that is fastest on the device side by side (on a CPU"
            f" --tree-size {CPU_DEMO_TREE_SIZE}, on CUDA the shipped tree)"
        ),
    )
    seed.add_argument("--beam-width", "-w", type=positive_int, default=d.beam_width,
                      help=f"beams for multi-head drafting ({d.beam_width})")
    seed.add_argument("--use-no-medusa-heads", "-nmh", type=positive_int, default=d.num_heads,
                      help=f"how many Medusa heads to use ({d.num_heads})")
    ModelSpec.add_arguments(seed, defaults, MAIN_HELPS, only=("model_name",))
    DataSpec.add_arguments(seed, defaults, only=("max_input_len",))
    most = defaults.max_output_len
    seed.add_argument("--max-output-len", "-mol", type=positive_int, default=most,
                      help=f"new tokens at most ({most})")
    seed.add_argument(
        "--debug", "-db", action="store_true", help="print every prediction and library logs"
    )


def add_strategy_flags(more) -> None:
    """The acceptance rule, the tree, the shipped translators and adaptive depth."""
    more.add_argument(
        "--acceptance",
        choices=list(ACCEPTANCE_RULES),
        default=None,
        help=(
            "greedy (lossless: same tokens as single-head at --temperature 0, and above it"
            " speculative sampling, which keeps the base model's sampling distribution exactly;"
            " the default), typical (confidence threshold; lossy; above --temperature 0 it samples"
            " its first and bonus tokens as Medusa's does) or rescore (the course's step 3: the"
            " best whole candidate by base log-probability, drafted whole even near"
            " --max-output-len and cut there; lossy; temperature 0 only; the default when grading"
            " multi-head)"
        ),
    )
    more.add_argument(
        "--temperature",
        type=NON_NEGATIVE,
        default=DecodeSettings.temperature,
        help=(
            "0 decodes greedily (the default); above 0 every strategy samples from the base"
            " model's logits divided by it, cut by --top-k and --top-p (reseeded per example"
            " from --seed and its prompt); multi-head and tree verify their drafts by"
            " speculative sampling, so their outputs have single-head sampling's distribution"
        ),
    )
    more.add_argument(
        "--top-k",
        type=NON_NEGATIVE_COUNT,
        default=DecodeSettings.top_k,
        help="sampling: draw from the K most likely tokens only (0: all)",
    )
    more.add_argument(
        "--top-p",
        type=probability,
        default=DecodeSettings.top_p,
        help="sampling: draw from the smallest set of tokens whose probability reaches P (1: all)",
    )
    more.add_argument(
        "--tree",
        default=None,
        help=(
            "tree strategy: a JSON tree file (list of rank paths); default: the tree calibrated for"
            " the model's heads when it ships one (the embedded default does), else the built-in"
            " tree for --use-no-medusa-heads; 'builtin' forces the built-in tree"
        ),
    )
    more.add_argument(
        "--tree-size",
        type=positive_int,
        default=None,
        metavar="N",
        help=(
            "tree strategy: rebuild the tree with N nodes from the accuracies its calibration kept"
            " (the shipped tree has 127, sized for a GPU; on a CPU, where every node costs, 3"
            " measured fastest)"
        ),
    )
    more.add_argument(
        "--dynamic-tree",
        type=positive_int,
        default=None,
        metavar="N",
        help=(
            "tree strategy: instead of a static tree, draft a dynamic tree of N nodes each step,"
            " --use-no-medusa-heads deep: the frontier nodes with the highest cumulative draft"
            " probability are expanded and the N best kept (EAGLE-2 style; eager loop)"
        ),
    )
    more.add_argument(
        "--translator",
        choices=list(TRANSLATORS),
        default="default",
        help=(
            "the embedded model's shipped translator: default (its drafter reaches τ 3.1 on"
            " IN22-Gen; FLORES-200 chrF 18.7) or faithful (chrF 25.5, sacreBLEU 4.0, τ about 2;"
            " int8-stored, with a drafter trained on its own text); other commands take"
            f" --model-name {FAITHFUL_NAME}"
        ),
    )
    more.add_argument(
        "--bare-embedded",
        action="store_true",
        help=(
            "the embedded SmolLM2 without its shipped translation adapter, trained heads and tree "
            "(5 untrained identity heads instead)"
        ),
    )
    more.add_argument(
        "--adaptive",
        action="store_true",
        help="multi-head/tree: use as many heads each step as recent steps accepted (reported)",
    )


def add_grading_flags(more) -> None:
    """A graded submission, the course's table and the single-head baseline."""
    more.add_argument(
        "--generator",
        default=None,
        metavar="FILE.py:CLASS",
        help=(
            "grade a course submission: run its MedusaTextGenerator(model, decoding_strategy,"
            " eos_id, use_no_medusa_heads, beam_width, max_output_len) instead of the built-in"
            " decoders, then our strategy of the same name on the same rows, for the grading report"
            " (grading.json)"
        ),
    )
    more.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=None,
        metavar="SECONDS",
        help=(
            "with --generator: an example the submission has not finished in SECONDS fails (its "
            "process is killed, a new one takes over, the run goes on); default: no limit"
        ),
    )
    more.add_argument(
        "--sandbox",
        action="store_true",
        help=(
            "with --generator: run the submission in Linux namespaces that hide the network and"
            " every file but its folder, Python and the model's files (references, results,"
            " secrets)"
        ),
    )
    more.add_argument(
        "--assignment-table",
        action="store_true",
        help=(
            "run single-head and multi-head for W in {2,5,10} x S in {2,5} with one model load and"
            " print the course's results table (also table.md, table.csv and PNG plots in"
            " --output-dir; each row's files in a sub-folder)"
        ),
    )
    more.add_argument(
        "--compare-single-head",
        action="store_true",
        help="also run single-head on the same examples and report speedup and identical outputs",
    )


def add_typical_and_setup_flags(more) -> None:
    """Typical acceptance's two numbers, and the setup whose defaults fill model, data, prompt."""
    d = DecodeSettings()
    more.add_argument("--posterior-threshold", type=probability, default=d.posterior_threshold,
                      help=f"typical: epsilon ({d.posterior_threshold})")
    more.add_argument("--posterior-alpha", type=probability, default=d.posterior_alpha,
                      help=f"typical: alpha ({d.posterior_alpha})")
    more.add_argument(
        "--setup",
        choices=["auto", *SETUPS],
        default="auto",
        help=(
            "defaults for model, data and prompt: 'seed' (the course protocol) or 'embedded' "
            "(offline); auto = seed when --hf-token is passed, else embedded"
        ),
    )


def add_model_and_data_flags(more, defaults: RunSettings) -> None:
    """The specs' flags the seed's group leaves, in the order --help has always listed them."""
    ModelSpec.add_arguments(more, defaults, MAIN_HELPS, only=("medusa_heads", "adapter"))
    DataSpec.add_arguments(more, defaults,
                           only=("dataset", "split", "src_lang", "tgt_lang", "num_examples"))
    more.add_argument(
        "--all-examples", action="store_true", help="use every row instead of --num-examples"
    )
    DataSpec.add_arguments(more, defaults, MAIN_HELPS, only=("prompt_style",))
    ModelSpec.add_arguments(more, defaults, MAIN_HELPS, only=("device", "device_map", "dtype"))


def add_run_flags(more) -> None:
    """The engine, the output folder, resuming, warm-up, seed and threads."""
    more.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help=(
            "auto = graphs on CUDA, eager on CPU; graphs: static KV cache and each strategy's step"
            " captured once as a CUDA graph (capture time printed, never timed); compiled: graphs"
            " of a torch.compile'd step (faster steps, 20-60 s to build per strategy); eager: the"
            " reference loop"
        ),
    )
    more.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help=(
            "rows decoded together (1): each row drafts and accepts on its own, all rows verify in"
            " one forward, and a finished row takes the next example at once; output files keep"
            " the dataset's order. Runs in the fast engine (graphs or compiled on CUDA, its"
            " uncaptured step on a CPU); the eager loop decodes one row at a time"
        ),
    )
    more.add_argument(
        "--output-dir",
        "-o",
        default=None,
        help=(
            "where predictions.jsonl, summary.json, "
            "summary.csv and the plots go (default results/SETUP-STRATEGY-TIME); one run at a time"
        ),
    )
    more.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output-dir"
    )
    more.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed warm-up generation"
    )
    more.add_argument("--seed", type=SEED, default=0, help="random seed (0)")
    add_threads_argument(more)


# seconds: below this not even a finished submission's reply arrives, so every example would fail
MIN_TIMEOUT = 0.1


def timeout_seconds(text: str) -> float:
    """--timeout: a finite number of seconds, at least :data:`MIN_TIMEOUT` (a shorter one only fails
    examples)."""
    return checked_number(
        text,
        float,
        "a number of seconds",
        lambda v: MIN_TIMEOUT <= v < float("inf"),
        f"must be a positive number of seconds, at least {MIN_TIMEOUT:g}, got {{text}}",
    )


def add_threads_argument(p) -> None:
    p.add_argument(
        "--threads",
        type=threads_arg,
        default=None,
        metavar="N",
        help="CPU threads for torch (auto: the idle cores, at most 4; OMP_NUM_THREADS if set)",
    )


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings: the flags of the same names, and what the setup, the demo rule and the
    shipped translators work out from several."""
    setup = args.setup
    if setup == "auto":
        setup = "seed" if args.hf_token is not None else "embedded"
    defaults = SETUPS[setup]
    demo = is_demo(args, setup)
    strategy = "tree" if demo else args.decoding_strategy or DecodeSettings.strategy
    check_flag_pairs(args, strategy)
    acceptance = args.acceptance or default_acceptance(args.generator, strategy,
                                                       args.assignment_table)
    tree_size = args.tree_size
    if (demo and tree_size is None and args.tree is None and args.dynamic_tree is None
            and on_cpu(args.device)):
        tree_size = CPU_DEMO_TREE_SIZE
    model_name = chosen_model(args, setup, defaults["model_name"])
    # a shipped translator brings its own adapter, drafter and tree: the loader's check, before
    # anything loads
    check_shipped(LoadSettings(model_name, args.medusa_heads, adapter=args.adapter,
                               embedded_extras=not args.bare_embedded))
    style = args.prompt_style if args.prompt_style != "auto" else defaults["prompt_style"]
    dataset = defaults["dataset"] if args.dataset is None else args.dataset
    return settings_from_namespace(
        RunSettings, args, setup=setup, model_name=model_name, decoding_strategy=strategy,
        acceptance=acceptance, dataset=dataset, prompt_style=style,
        num_examples=None if args.all_examples else args.num_examples,
        tree_file=args.tree, tree_size=tree_size,
        compare_single_head=args.compare_single_head or demo, warmup=not args.no_warmup,
        hf_token=args.hf_token or os.environ.get("HF_TOKEN") or None)


def check_flag_pairs(args: argparse.Namespace, strategy: str) -> None:
    """Flags that shape one strategy, or act only beside another flag, refused where they would
    do nothing."""
    if args.tree_size is not None and strategy != "tree":
        raise MedusaError(
            f"--tree-size shapes the tree strategy only: add -ds tree (not {strategy})"
        )
    if args.dynamic_tree is not None and strategy != "tree":
        raise MedusaError(f"--dynamic-tree is a tree strategy: add -ds tree (not {strategy})")
    if args.dynamic_tree is not None and (args.tree is not None or args.tree_size is not None):
        raise MedusaError("--dynamic-tree builds its own tree each step: drop --tree / --tree-size")
    if args.timeout is not None and not args.generator:
        raise MedusaError(
            "--timeout limits a submission's time per example: add --generator FILE.py:CLASS"
        )
    if args.sandbox and not args.generator:
        raise MedusaError("--sandbox isolates a graded submission: add --generator FILE.py:CLASS")


def chosen_model(args: argparse.Namespace, setup: str, default: str) -> str:
    """--model-name, else the setup's model; --translator names a translator shipped with the
    embedded model."""
    model_name = default if args.model_name is None else args.model_name
    if args.translator != "default":
        if args.model_name not in (None, EMBEDDED_NAME, TRANSLATORS[args.translator]):
            raise MedusaError(
                "--translator picks a translator shipped with the embedded model: drop --model-name"
            )
        if setup != "embedded":
            raise MedusaError(
                "--translator picks a translator shipped with the embedded model: drop --hf-token /"
                " --setup seed (the hub model has its own)"
            )
        model_name = TRANSLATORS[args.translator]
    return model_name


def is_demo(args: argparse.Namespace, setup: str) -> bool:
    """No --decoding-strategy on the embedded model with its shipped drafter: the demo shows Medusa
    beside single-head. The seed setup, your own model or heads, grading and the course table keep
    the seed's default."""
    own = (
        args.model_name not in (None, EMBEDDED_NAME, FAITHFUL_NAME)
        or args.medusa_heads
        or args.adapter
    )
    return (
        args.decoding_strategy is None
        and setup == "embedded"
        and not own
        and not args.bare_embedded
        and not args.generator
        and not args.assignment_table
        and not args.temperature
    )


def on_cpu(device: str) -> bool:
    """Where --device sends the run (auto: CUDA when there is one); a bad name is left to the
    loader's error."""
    from medusa.model.loader import resolve_device

    try:
        return resolve_device(device).type == "cpu"
    except (MedusaError, RuntimeError, ValueError):
        return False


def default_acceptance(generator: str | None, strategy: str, table: bool) -> str:
    """Greedy (lossless), except when grading multi-head code: the course's own rule, rescore, is
    the reference."""
    return "rescore" if generator and (strategy == "multi-head" or table) else "greedy"


def quiet_libraries(debug: bool) -> None:
    """Library warnings and download bars drown our progress bar; --debug brings them back."""
    if debug:
        return
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        # errors too: ours says what went wrong, in one line
        hf_logging.set_verbosity(hf_logging.CRITICAL)
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.logging.set_verbosity(datasets.logging.CRITICAL)
        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity(hub_logging.CRITICAL)
    except ImportError:
        pass


# never looked up on the hub
BUILT_IN_NAMES = (EMBEDDED_NAME, FAITHFUL_NAME, "flores200-sample", "in22-gen-sample", "builtin")
HUB_NAME_KEYS = ("model_name", "medusa_heads", "adapter", "dataset", "train_data", "eval_data")


def hub_names(values: dict) -> list[str]:
    """The model and data names among a command's settings (lists flattened), for
    :func:`fail_fast_offline`."""
    names: list[str] = []
    for key in HUB_NAME_KEYS:
        value = values.get(key)
        names += [
            v
            for v in (value if isinstance(value, (list, tuple)) else [value])
            if isinstance(v, str)
        ]
    return names


def subcommand_parser(name: str, description: str, add_arguments) -> OneLineParser:
    """A subcommand's parser: its module's flags, then --threads."""
    p = OneLineParser(prog=f"medusa.py {name}", allow_abbrev=False, description=description)
    add_arguments(p)
    add_threads_argument(p)
    return p


def parse_subcommand(argv: list[str], name: str, description: str, add_arguments) -> dict:
    """Parse a subcommand's own flags; the token may also come from HF_TOKEN."""
    args = vars(subcommand_parser(name, description, add_arguments).parse_args(argv))
    if args.get("hf_token"):
        warn_token_flag()
    args["hf_token"] = args.get("hf_token") or os.environ.get("HF_TOKEN") or None
    apply_threads(args.pop("threads"))
    fail_fast_offline(hub_names(args), BUILT_IN_NAMES)
    quiet_libraries(False)
    return args


def calibrate_main(argv: list[str]) -> None:
    from medusa.measure.calibration_run import CalibrationSettings, add_arguments, run_calibration

    args = parse_subcommand(
        argv,
        "calibrate-tree",
        "Measure each head's top-k accuracy on a model's own greedy "
        "output and save the tree of --tree-size nodes with the highest expected tokens per step "
        "(use it with --tree).",
        add_arguments,
    )
    run_calibration(CalibrationSettings(**args))


def train_heads_main(argv: list[str]) -> None:
    from medusa.training.train_heads import add_arguments, settings_from, train_heads

    args = parse_subcommand(
        argv,
        "train-heads",
        "Train Medusa heads by self-distillation: the base model's own "
        "greedy continuations of the dataset's prompts are the targets (Medusa-1; --joint-lora "
        "for Medusa-2).",
        add_arguments,
    )
    settings = settings_from(argparse.Namespace(**args))
    with claimed_folder(Path(settings.output_dir)):  # checked and locked before the model loads
        if settings.joint_lora:
            from medusa.training.train_joint import train_joint

            train_joint(settings)
        else:
            train_heads(settings)


def finetune_main(argv: list[str]) -> None:
    from medusa.training.finetune import FinetuneSettings, add_arguments, finetune

    args = parse_subcommand(
        argv,
        "finetune",
        "LoRA-fine-tune a base model on translation pairs; saves a small "
        "adapter that --adapter merges into the model at load time.",
        add_arguments,
    )
    settings = FinetuneSettings(**args)
    with claimed_folder(Path(settings.output_dir)):  # checked and locked before the model loads
        finetune(settings)


def measure_main(argv: list[str]) -> None:
    from medusa.measure.acceptance_report import add_arguments, run_measure, settings_from

    args = parse_subcommand(
        argv,
        "measure-acceptance",
        "Per-head top-1/top-5 accuracy and greedy tokens per step "
        "(τ) of the multi-head grid and the tree on whole datasets, replayed from one "
        "teacher-forced pass over the model's greedy output.",
        add_arguments,
    )
    run_measure(settings_from(args))


SUBCOMMANDS = {
    "calibrate-tree": calibrate_main,
    "measure-acceptance": measure_main,
    "train-heads": train_heads_main,
    "finetune": finetune_main,
}
# the main run (no subcommand) and train-heads have --resume; the others save at the end
RESUMABLE = (None, "train-heads")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] and argv[0] in SUBCOMMANDS:
            SUBCOMMANDS[argv[0]](argv[1:])
            return 0
        args = build_parser().parse_args(argv)
        settings = settings_from_args(args)
        warned = bool(settings.generator and settings.hf_token) and hide_token_from_submission(
            settings.hf_token, settings.sandbox
        )
        if args.hf_token and not warned:  # one warning about the token, never two
            warn_token_flag(
                " (with --setup seed for the seed protocol)" if args.setup == "auto" else ""
            )
        settings.threads = apply_threads(settings.threads)
        # under accelerate launch: join the process group first, so only the main process speaks
        processes()
        fail_fast_offline(hub_names(vars(settings)), BUILT_IN_NAMES)
        quiet_libraries(settings.debug)
        # never call it "embedded"
        own = settings.setup == "embedded" and not is_embedded(settings.model_name)
        model = (f"your model {settings.model_name}" if own
                 else f"{settings.setup} — model {settings.model_name}")
        say(f"setup: {model}, data {settings.dataset}, strategy {settings.decoding_strategy}")
        from medusa.runner import run, run_table

        results = run_table(settings) if args.assignment_table else [run(settings)]
        failed = sum(r.get("failed_examples", 0) for r in results if isinstance(r, dict))
        # the run finished and wrote everything; its exit status says a submission failed examples
        if failed:
            say(f"exit status 1: the submission failed {failed} example{'s' * (failed != 1)}")
        end_processes(1 if failed else 0)
        if failed:
            return 1
    except MedusaError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say(interrupted_message(argv[0] if argv[:1] and argv[0] in SUBCOMMANDS else None))
        return 130
    except OSError as exc:
        from medusa.evaluation.results import disk_advice, refused_write

        if not refused_write(exc):
            raise

        where = exc.filename or getattr(locals().get("settings"), "output_dir", None)
        say(
            f"error: cannot write{f' in {where}' if where else ''}: {exc.strerror};"
            f" {disk_advice(exc)}, then run again (examples already finished are kept: add"
            " --resume)"
        )
        return 2
    except torch_oom_errors() as exc:  # type: ignore[misc]
        say(f"error: out of memory ({str(exc).splitlines()[0]}); try --dtype float16, a smaller "
            "--max-input-len or --device cpu")
        return 3
    return 0


def hide_token_from_submission(token: str, sandbox: bool) -> bool:
    """A graded submission runs as the grader's user and may read the grader's command line; the
    token leaves it. True when it warned that the token stays there (which already says to use
    HF_TOKEN)."""
    from medusa.grading.isolation import scrub_command_line

    if not scrub_command_line(token) and not sandbox:
        say(
            "warning: --hf-token stays readable in this process's command line, where the"
            " submission can read it; pass the token as HF_TOKEN instead, or grade with --sandbox"
        )
        return True
    return False


def warn_token_flag(then: str = "") -> None:
    """Any user of the machine can read a process's command line (ps), so a token given as a flag is
    shared."""
    say(
        "warning: --hf-token shows the token to every user of this machine (ps); set the HF_TOKEN"
        f" environment variable{then} or log in once with `hf auth login` (older: huggingface-cli"
        " login) instead"
    )


def interrupted_message(command: str | None) -> str:
    """Only commands that have ``--resume`` are told to use it."""
    if command is None:
        return (
            "interrupted: finished examples are saved; rerun with --resume and the same"
            " --output-dir to continue"
        )
    if command in RESUMABLE:
        return (
            f"interrupted: rerun {command} with --resume and the same --output-dir to continue from"
            " its checkpoint"
        )
    return (
        f"interrupted: {command} writes its results only at the end, so nothing was saved; run it"
        " again"
    )


def torch_oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.cuda.OutOfMemoryError,) if hasattr(torch.cuda, "OutOfMemoryError") else ()
