"""Load translation examples from a built-in sample, a local file/folder, or the hub.

Every source is reduced to "named columns of text" (a column per language code) so the
checks that matter for an evaluation -- the source column exists, references exist or
are knowingly absent, rows stay in order -- are done once, with messages a user can act on.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import datasets
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from medusa.console import say
from medusa.errors import MedusaError
from medusa.model.hub import network_down
from medusa.evaluation.languages import CODE_PATTERN, check_language_code

DEFAULT_SPLIT = "test"  # --split's default: hub datasets only


@dataclass(frozen=True)
class Example:
    """One row to translate; `index` lets outputs be traced back to the source dataset."""

    index: int  # row number in the source dataset
    source: str
    target: str | None  # None when the dataset has no reference for tgt_lang


@dataclass(frozen=True)
class DatasetInfo:
    """Where the examples came from, for the run's report."""

    name: str  # what the user passed (hub id, path, or built-in name)
    kind: str  # "hub" | "local" | "builtin"
    split: str | None
    has_references: bool
    total_rows: int


# Built-in name -> file stem inside medusa/samples/ (files are STEM.<lang_code>).
BUILTIN_DATASETS: dict[str, str] = {
    "flores200-sample": "flores200-devtest",
    "in22-gen-sample": "in22-gen",
}

_TABULAR_BUILDERS: dict[str, str] = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}
_LANG_FILE = re.compile(r"^(?P<name>.+)\.(?P<lang>[a-z]{3}_[A-Z][a-z]{3})$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "on", "yes", "true"}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-failure types of whichever HTTP client huggingface_hub uses (httpx2 or httpx)."""
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_NETWORK_ERRORS = (
    ConnectionError,
    OfflineModeIsEnabled,
    LocalEntryNotFoundError,
    *_transport_errors(),
)


@dataclass(frozen=True)
class _Table:
    """A dataset seen as columns: `read(col)` gives the whole column, in row order."""

    kind: str
    split: str | None
    columns: list[str]
    read: Callable[[str], list[Any]]
    where: Callable[[str], str]  # where a column lives (file path or hub id), for messages
    text_files: bool = False  # columns are NAME.<lang> files
    one_file: bool = False  # the user named one NAME.<lang> file: a missing target is allowed


def load_examples(
    dataset: str,
    src_lang: str,
    tgt_lang: str,
    num_examples: int | None,
    token: str | None = None,
    split: str = "test",
) -> tuple[list[Example], DatasetInfo]:
    """Return the first `num_examples` rows (all if None) of `dataset` for src->tgt.

    `tgt_lang` may be missing only for reference-free data (speed only): a dataset with no
    language column besides `src_lang`, or one NAME.<lang> file named directly. Then every
    target is None; otherwise a missing column is a typo worth stopping for.
    """
    src = check_language_code(src_lang)
    tgt = check_language_code(tgt_lang)
    if src == tgt:
        raise MedusaError(
            f"source and target language are both {src}; pick two different languages"
        )
    if num_examples is not None and (isinstance(num_examples, bool) or num_examples < 1):
        raise MedusaError(f"--num-examples must be a positive integer (got {num_examples})")
    if not isinstance(dataset, str) or not dataset.strip():
        raise MedusaError("--dataset is empty; pass a built-in name, a local path or a hub id")

    table = _resolve(dataset, token, split)
    if table.kind != "hub" and split != DEFAULT_SPLIT:
        say(f"note: --split {split} is for hub datasets; {dataset} is read whole")
    examples, has_refs, total = _select(table, dataset, src, tgt, num_examples)
    info = DatasetInfo(
        name=dataset, kind=table.kind, split=table.split, has_references=has_refs, total_rows=total
    )
    return examples, info


def _select(
    table: _Table, dataset: str, src: str, tgt: str, num_examples: int | None
) -> tuple[list[Example], bool, int]:
    """Check the language columns and build Examples from the first rows, in order."""
    langs = [c for c in table.columns if CODE_PATTERN.match(c)]
    if src not in table.columns:
        raise MedusaError(f"dataset {dataset!r} has no {src} column; {_available(table.columns)}")
    has_refs = tgt in table.columns
    if not has_refs and not table.one_file and any(c != src for c in langs):
        hint = ""
        if table.text_files and table.kind == "local":
            hint = f"; to run without references (speed only) pass the file {table.where(src)}"
        raise MedusaError(
            f"dataset {dataset!r} has no {tgt} column for the references;"
            f" {_available(table.columns)}{hint}"
        )
    sources = table.read(src)
    targets = table.read(tgt) if has_refs else None
    if targets is not None and len(targets) != len(sources):
        raise MedusaError(
            f"{table.where(src)} has {len(sources)} lines but {table.where(tgt)} has "
            f"{len(targets)}; the files must be line-aligned"
        )
    total = len(sources)
    if total == 0:
        raise MedusaError(
            f"dataset {dataset!r} has no rows in {table.where(src)}; pass a non-empty dataset"
        )
    count = total if num_examples is None else min(num_examples, total)
    # said, not silent: the summary would show fewer rows
    if num_examples is not None and num_examples > total:
        say(
            f"note: --num-examples {num_examples} is more than {dataset!r} has ({total} rows);"
            f" using all {total}"
        )
    examples = [
        Example(
            index=i,
            source=_text(sources[i], i, src, table),
            target=None if targets is None else _text(targets[i], i, tgt, table),
        )
        for i in range(count)
    ]
    empty = [ex.index for ex in examples if blank(ex.source)]
    if empty:  # a translation of nothing would be scored as if it were one
        raise MedusaError(
            f"{table.where(src)} has empty {src} text in row(s) {_rows(empty)} (counting from 0); "
            "remove those rows or fill them in"
        )
    unreferenced = [ex.index for ex in examples if ex.target is not None and blank(ex.target)]
    if unreferenced:  # scored, an empty reference reads as a real zero
        raise MedusaError(
            f"{table.where(tgt)} has empty {tgt} references in row(s) {_rows(unreferenced)} "
            f"(counting from 0); remove those rows, fill them in, or pass {table.where(src)} alone "
            "to run without references (speed only)"
        )
    return examples, has_refs, total


def blank(text: str) -> bool:
    """Nothing a reader can see: spaces, control and format characters (zero-width spaces and
    joiners, BOMs)."""
    return all(unicodedata.category(c)[0] in "CZ" for c in text)


def _rows(indices: list[int]) -> str:
    return ", ".join(map(str, indices[:5])) + (
        f" and {len(indices) - 5} more" if len(indices) > 5 else ""
    )


def _available(columns: Iterable[str]) -> str:
    """Phrase listing the language columns a dataset does have (or all, if none look like codes)."""
    cols = list(columns)
    langs = sorted(c for c in cols if CODE_PATTERN.match(c))
    if langs:
        return f"available language columns: {', '.join(langs)}"
    return (
        f"it has no language-code columns (columns: {', '.join(cols) or 'none'}); "
        "name columns by language code, e.g. hin_Deva, eng_Latn"
    )


def _text(value: Any, row: int, column: str, table: _Table) -> str:
    """A cell as text with trailing newlines stripped; a non-text cell is a data error."""
    if not isinstance(value, str):
        what = "empty (null)" if value is None else type(value).__name__
        raise MedusaError(
            f"row {row} of {column} in {table.where(column)} is {what}, not text; "
            "fix the data or pick other rows"
        )
    return value.rstrip("\r\n")


# ---------------------------------------------------------------- resolving the name


def _resolve(dataset: str, token: str | None, split: str) -> _Table:
    """Decide whether `dataset` is built-in, local or a hub id, and open it."""
    if dataset in BUILTIN_DATASETS:
        samples = resources.files("medusa").joinpath("samples")
        files = _lang_files(samples.iterdir()).get(BUILTIN_DATASETS[dataset], {})
        return _text_table(files, "builtin")

    path = Path(dataset).expanduser()
    if path.is_dir():
        return _text_table(_pick_folder_set(path), "local")
    if path.is_file():
        builder = _TABULAR_BUILDERS.get(path.suffix.lower())
        if builder is not None:
            return _tabular_table(path, builder)
        match = _LANG_FILE.match(path.name)
        if match is not None:  # one file of a set: siblings NAME.<tgt> still give references
            return _text_table(_prefix_set(path.parent, match["name"]), "local", one_file=True)
        raise MedusaError(
            f"cannot read {path}: use a .jsonl, .json, .csv or .parquet file, "
            "or a folder of NAME.<lang_code> files"
        )
    parent = path.parent
    prefixed = _prefix_set(parent, path.name) if parent.is_dir() else {}
    if prefixed:
        return _text_table(prefixed, "local")
    if _looks_local(dataset, path):
        found = sorted(_lang_files(parent.iterdir())) if parent.is_dir() else []
        hint = f" (datasets in {parent}: {', '.join(found)})" if found else ""
        raise MedusaError(
            f"dataset path {dataset!r} does not exist{hint}; pass an existing file, folder or"
            " folder/NAME"
        )
    if _HUB_ID.match(dataset):
        return _hub_table(dataset, token, split)
    raise MedusaError(
        f"{dataset!r} is not a built-in dataset ({', '.join(BUILTIN_DATASETS)}), an existing path, "
        "or a hub id like ai4bharat/IN22-Gen; pass one of those to --dataset"
    )


def _looks_local(dataset: str, path: Path) -> bool:
    """True when a missing `dataset` was clearly meant as a path rather than a hub id."""
    if dataset.startswith((".", "/", "~")) or not _HUB_ID.match(dataset):
        return "/" in dataset or os.sep in dataset or dataset.startswith((".", "~"))
    return (
        path.suffix.lower() in _TABULAR_BUILDERS
        or bool(_LANG_FILE.match(path.name))
        or path.parent.is_dir()  # an existing folder: a typo in NAME, not a hub id
    )


# ---------------------------------------------------------------- text files NAME.<lang>


def _lang_files(entries: Iterable[Traversable]) -> dict[str, dict[str, Traversable]]:
    """Group files named NAME.<lang_code> as {NAME: {lang_code: file}}."""
    sets: dict[str, dict[str, Traversable]] = {}
    for entry in entries:
        match = _LANG_FILE.match(entry.name)
        if match is not None and entry.is_file():
            sets.setdefault(match["name"], {})[match["lang"]] = entry
    return sets


def _prefix_set(folder: Path, name: str) -> dict[str, Traversable]:
    """The files folder/NAME.<lang_code> for one NAME (empty if there are none)."""
    return _lang_files(folder.iterdir()).get(name, {})


def _pick_folder_set(folder: Path) -> dict[str, Traversable]:
    """The single NAME.<lang> set in `folder`; several sets need --dataset folder/NAME."""
    sets = _lang_files(folder.iterdir())
    if not sets:
        raise MedusaError(
            f"folder {folder} has no files named NAME.<lang_code> (e.g. test.hin_Deva); "
            "pass such a folder, or a .jsonl/.json/.csv/.parquet file"
        )
    if len(sets) > 1:
        names = ", ".join(sorted(sets))
        raise MedusaError(
            f"folder {folder} holds several datasets ({names}); pass --dataset {folder}/NAME to"
            " pick one"
        )
    return next(iter(sets.values()))


def _text_table(files: dict[str, Traversable], kind: str, one_file: bool = False) -> _Table:
    """Columns backed by line-aligned text files, read only when asked for."""
    if not files:  # only reachable for a broken installation of the package data
        raise MedusaError("the built-in sample files are missing; reinstall the medusa package")

    def where(column: str) -> str:
        return str(files[column])

    def read(column: str) -> list[str]:
        file = files[column]
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise MedusaError(
                f"{file} is not UTF-8 text ({exc.reason}); convert it to UTF-8"
            ) from exc
        except OSError as exc:
            why = exc.strerror or exc
            raise MedusaError(
                f"cannot read {file} ({why}); check the path and permissions"
            ) from exc
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line, it does not start a new one
        return lines

    return _Table(kind, None, sorted(files), read, where, text_files=True, one_file=one_file)


# ---------------------------------------------------------------- tabular files and the hub


def _check_text_file(path: Path) -> None:
    """Text formats must be UTF-8 and not empty: `datasets` reports either only deep inside pyarrow,
    or not at all."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line, seen_text = 1, False
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line += chunk[: exc.start].count(b"\n")
                    raise MedusaError(
                        f"{path} is not UTF-8 text (line {line}: {exc.reason}); convert it to"
                        " UTF-8, e.g. iconv -f LATIN1 -t UTF-8"
                    ) from None
                line += chunk.count(b"\n")
                seen_text = seen_text or bool(text.strip())
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise MedusaError(
            f"{path} is not UTF-8 text (it ends inside a character); convert it to UTF-8"
        ) from None
    except OSError as exc:
        raise MedusaError(
            f"cannot read {path} ({exc.strerror or exc}); check the path and permissions"
        ) from None
    if not seen_text:
        raise MedusaError(f"{path} is empty: pass a file with one row per example")


def _tabular_table(path: Path, builder: str) -> _Table:
    """Columns of a local .jsonl/.json/.csv/.parquet file, loaded with `datasets`."""
    if path.suffix.lower() != ".parquet":
        _check_text_file(path)
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # any parse failure is a problem with the user's file
        cause: BaseException = exc
        while isinstance(cause.__cause__, Exception) and "generating the dataset" in str(cause):
            cause = cause.__cause__  # datasets' wrapper says nothing; its cause names the problem
        kind = path.suffix.lstrip(".")
        raise MedusaError(
            f"cannot read {path} as {kind} ({_first_line(cause)}); fix or replace the file"
        ) from exc
    return _dataset_table(ds, "local", None, str(path))


def _dataset_table(ds: Any, kind: str, split: str | None, label: str) -> _Table:
    """Wrap a `datasets.Dataset` as a _Table."""
    return _Table(
        kind,
        split,
        list(ds.column_names),
        lambda column: list(ds[column]),
        lambda column: label,
    )


def _hub_table(dataset: str, token: str | None, split: str) -> _Table:
    """Load `split` of a hub dataset, turning access and network failures into advice."""
    try:
        ds = datasets.load_dataset(dataset, split=split, token=token)
    except Exception as exc:  # every failure becomes one actionable line without the token
        raise _hub_error(exc, dataset, token, split) from exc
    if not isinstance(ds, datasets.Dataset):
        raise MedusaError(
            f"dataset {dataset} split {split!r} is not a plain table; pass another --split"
        )
    return _dataset_table(ds, "hub", split, dataset)


def _hub_error(exc: Exception, dataset: str, token: str | None, split: str) -> MedusaError:
    """The MedusaError for a failed hub load: gated, missing, offline, bad split or other."""
    access = (
        f"accept its terms at https://huggingface.co/datasets/{dataset} while logged in, "
        "then pass --hf-token or set HF_TOKEN"
    )
    missing = f"dataset {dataset} was not found or is not accessible; check the id, or {access}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    reason = _redact(_first_line(exc), token)
    gated = isinstance(exc, DatasetNotFoundError) and "gated" in reason.lower()
    if gated or isinstance(exc, GatedRepoError):
        return MedusaError(f"dataset {dataset} is gated; {access}")
    if isinstance(exc, (RepositoryNotFoundError, DatasetNotFoundError)):
        return MedusaError(missing)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return MedusaError(f"access to dataset {dataset} was refused (HTTP {status}); {access}")
    if isinstance(exc, _NETWORK_ERRORS):
        why = (
            "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)"
            if _offline() and not network_down()
            else "no connection"
        )
        return MedusaError(
            f"the Hugging Face hub is unreachable ({why}) and {dataset} is not cached; use"
            " --dataset flores200-sample or a local path instead (--setup embedded runs the whole"
            " offline default: model and data)"
        )
    if isinstance(exc, ValueError) and "split" in reason.lower():
        return MedusaError(
            f"dataset {dataset} has no split {split!r} ({reason}); pass another --split"
        )
    return MedusaError(
        f"cannot load dataset {dataset} from the hub ({type(exc).__name__}: {reason}); "
        "check --dataset and --split, or use --dataset flores200-sample"
    )


def _offline() -> bool:
    """Whether the user switched the Hugging Face libraries to offline mode."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


def _first_line(exc: BaseException) -> str:
    """First line of an exception's text, so messages stay one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(text: str, token: str | None) -> str:
    """Remove the token from text that came from a third-party exception."""
    return text.replace(token, "***") if token else text
