"""Tests for medusa.evaluation.data: built-in samples, local files/folders, hub error handling."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import pytest
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub.errors import GatedRepoError

import medusa
import medusa.evaluation.data
from medusa.evaluation.data import DatasetInfo, Example, load_examples
from medusa.errors import MedusaError

SAMPLES = Path(medusa.__file__).resolve().parent / "samples"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
TOKEN = "hf_SECRETtoken1234567890"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _write_set(folder: Path, name: str, columns: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, lines in columns.items():
        (folder / f"{name}.{lang}").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


ROWS = [
    {"id": 1, "hin_Deva": "नमस्ते दुनिया", "eng_Latn": "Hello world"},
    {"id": 2, "hin_Deva": "बिल्ली बैठी", "eng_Latn": "The cat sat"},
    {"id": 3, "hin_Deva": "तीसरी पंक्ति", "eng_Latn": "Third row"},
]


# ---------------------------------------------------------------- built-in samples


def test_flores_sample_is_first_50_rows():
    examples, info = load_examples("flores200-sample", "hin_Deva", "eng_Latn", None)
    hin, eng = _lines(SAMPLES / "flores200-devtest.hin_Deva"), _lines(
        SAMPLES / "flores200-devtest.eng_Latn"
    )
    assert len(examples) == 50 == len(hin) == len(eng)
    assert info == DatasetInfo("flores200-sample", "builtin", None, True, 50)
    assert examples[0] == Example(0, hin[0], eng[0])
    assert [e.index for e in examples] == list(range(50))
    assert examples[49].target == eng[49]
    if SHARED.exists():
        shared = SHARED / "parallel-eng-hin"
        assert [e.source for e in examples] == _lines(shared / "flores200-devtest.hin_Deva")[:50]
        assert [e.target for e in examples] == _lines(shared / "flores200-devtest.eng_Latn")[:50]


def test_flores_sample_reverse_direction():
    examples, _ = load_examples("flores200-sample", "eng_Latn", "hin_Deva", 3)
    assert examples[0].source == _lines(SAMPLES / "flores200-devtest.eng_Latn")[0]
    assert examples[0].target == _lines(SAMPLES / "flores200-devtest.hin_Deva")[0]


def test_in22_sample_is_reference_free():
    examples, info = load_examples("in22-gen-sample", "hin_Deva", "eng_Latn", None)
    hin = _lines(SAMPLES / "in22-gen.hin_Deva")
    assert len(examples) == 50 == len(hin)
    assert info.kind == "builtin" and not info.has_references and info.total_rows == 50
    assert all(e.target is None for e in examples)
    assert examples[0].source == hin[0]
    if SHARED.exists():
        assert [e.source for e in examples] == _lines(SHARED / "in22" / "gen.hin_Deva")[:50]


def test_sample_licence_files_shipped():
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    assert "CC-BY-SA-4.0" in readme and "CC-BY-4.0" in readme
    assert "ac0f19c0be3cb4e0d9450fcb2d7a9847c4bdd180" in readme and "Gala et al" in readme
    assert (SAMPLES / "LICENSE-CC-BY-SA-4.0").stat().st_size > 1000


# ---------------------------------------------------------------- local tabular files


def test_local_jsonl(tmp_path):
    rows = [dict(ROWS[0], hin_Deva=ROWS[0]["hin_Deva"] + "\n")] + ROWS[1:]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    examples, info = load_examples(str(path), "hin_Deva", "eng_Latn", None)
    assert examples == [Example(i, r["hin_Deva"], r["eng_Latn"]) for i, r in enumerate(ROWS)]
    assert info == DatasetInfo(str(path), "local", None, True, 3)


def test_local_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    examples, _ = load_examples(str(path), "eng_Latn", "hin_Deva", 2)
    assert [(e.source, e.target) for e in examples] == [
        (r["eng_Latn"], r["hin_Deva"]) for r in ROWS[:2]
    ]


def test_local_csv(tmp_path):
    path = tmp_path / "d.csv"
    lines = [f'{r["id"]},{r["hin_Deva"]},"{r["eng_Latn"]}, ok"\n' for r in ROWS]
    body = "id,hin_Deva,eng_Latn\n" + "".join(lines)
    path.write_text(body, encoding="utf-8")
    examples, info = load_examples(str(path), "hin_Deva", "eng_Latn", None)
    assert [e.target for e in examples] == [r["eng_Latn"] + ", ok" for r in ROWS]
    assert examples[2].source == ROWS[2]["hin_Deva"] and info.total_rows == 3


def test_local_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    examples, info = load_examples(str(path), "hin_Deva", "eng_Latn", 2)
    assert examples == [Example(i, r["hin_Deva"], r["eng_Latn"]) for i, r in enumerate(ROWS[:2])]
    assert info.total_rows == 3 and info.kind == "local"


# ---------------------------------------------------------------- folders of NAME.<lang> files


def test_folder_single_set(tmp_path):
    _write_set(tmp_path, "tiny", {"hin_Deva": ["क", "ख"], "eng_Latn": ["a", "b"]})
    (tmp_path / "LICENSE").write_text("not data")
    examples, info = load_examples(str(tmp_path), "hin_Deva", "eng_Latn", None)
    assert examples == [Example(0, "क", "a"), Example(1, "ख", "b")]
    assert info.kind == "local" and info.has_references


def test_folder_with_several_sets_needs_name(tmp_path):
    _write_set(tmp_path, "alpha", {"hin_Deva": ["क"], "eng_Latn": ["a"]})
    _write_set(tmp_path, "beta", {"hin_Deva": ["ख", "ग"], "eng_Latn": ["b", "c"]})
    with pytest.raises(MedusaError, match="alpha, beta"):
        load_examples(str(tmp_path), "hin_Deva", "eng_Latn", None)
    examples, info = load_examples(str(tmp_path / "beta"), "hin_Deva", "eng_Latn", None)
    assert [e.target for e in examples] == ["b", "c"] and info.total_rows == 2
    examples, _ = load_examples(str(tmp_path / "beta.eng_Latn"), "hin_Deva", "eng_Latn", None)
    assert [e.source for e in examples] == ["ख", "ग"]


def test_shared_folder_name_form():
    folder = SHARED / "parallel-eng-hin"
    if not folder.exists():
        pytest.skip("shared reference data not present")
    with pytest.raises(MedusaError, match="flores200-devtest"):
        load_examples(str(folder), "hin_Deva", "eng_Latn", 5)
    examples, info = load_examples(str(folder / "flores200-devtest"), "hin_Deva", "eng_Latn", 5)
    assert len(examples) == 5 and info.total_rows == 1012


def test_text_lines_keep_inner_whitespace_and_strip_crlf(tmp_path):
    (tmp_path / "t.hin_Deva").write_bytes("  क  ख \r\nग\r\n".encode())
    (tmp_path / "t.eng_Latn").write_bytes(b"a\tb\nc\n")
    examples, _ = load_examples(str(tmp_path / "t"), "hin_Deva", "eng_Latn", None)
    assert examples == [Example(0, "  क  ख ", "a\tb"), Example(1, "ग", "c")]


def test_mismatched_line_counts(tmp_path):
    _write_set(tmp_path, "bad", {"hin_Deva": ["क", "ख", "ग"], "eng_Latn": ["a", "b"]})
    with pytest.raises(MedusaError, match="line-aligned"):
        load_examples(str(tmp_path), "hin_Deva", "eng_Latn", 1)


def test_missing_local_path():
    with pytest.raises(MedusaError, match="does not exist"):
        load_examples("./no/such/file.jsonl", "hin_Deva", "eng_Latn", None)
    with pytest.raises(MedusaError, match="not a built-in dataset"):
        load_examples("flores", "hin_Deva", "eng_Latn", None)


# ---------------------------------------------------------------- arguments and columns


def test_num_examples(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", ROWS)
    examples, info = load_examples(str(path), "hin_Deva", "eng_Latn", 2)
    assert [e.index for e in examples] == [0, 1] and info.total_rows == 3
    examples, _ = load_examples(str(path), "hin_Deva", "eng_Latn", 99)
    assert len(examples) == 3
    for bad in (0, -1):
        with pytest.raises(MedusaError, match="num-examples"):
            load_examples(str(path), "hin_Deva", "eng_Latn", bad)


@pytest.mark.parametrize("code", ["xx", "hin", "HIN_Deva", "hin_deva", "fra_Latn", ""])
def test_bad_language_code(code):
    with pytest.raises(MedusaError, match="unknown language code") as err:
        load_examples("flores200-sample", code, "eng_Latn", 1)
    assert "hin_Deva" in str(err.value)
    with pytest.raises(MedusaError, match="unknown language code"):
        load_examples("flores200-sample", "hin_Deva", code, 1)


def test_same_source_and_target():
    with pytest.raises(MedusaError, match="different"):
        load_examples("flores200-sample", "hin_Deva", "hin_Deva", 1)


def test_missing_column_lists_available(tmp_path):
    rows = [{"hin_Deva": "क", "mar_Deva": "अ", "note": "x"}]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(MedusaError, match="eng_Latn") as err:
        load_examples(str(path), "hin_Deva", "eng_Latn", None)
    assert "hin_Deva, mar_Deva" in str(err.value)
    with pytest.raises(MedusaError, match="no tam_Taml column") as err:
        load_examples(str(path), "tam_Taml", "hin_Deva", None)
    assert "hin_Deva, mar_Deva" in str(err.value)
    with pytest.raises(MedusaError, match="eng_Latn"):
        load_examples("in22-gen-sample", "eng_Latn", "hin_Deva", 1)


def test_reference_free_local(tmp_path):
    path = _write_jsonl(
        tmp_path / "d.jsonl", [{"id": 7, "hin_Deva": "क"}, {"id": 8, "hin_Deva": "ख"}]
    )
    examples, info = load_examples(str(path), "hin_Deva", "eng_Latn", None)
    assert examples == [Example(0, "क", None), Example(1, "ख", None)]
    assert not info.has_references


def test_single_file_allows_missing_target(tmp_path):
    _write_set(tmp_path, "gen", {"hin_Deva": ["क", "ख"], "san_Deva": ["अ", "आ"]})
    with pytest.raises(MedusaError, match="gen.hin_Deva"):  # hint: name the single file
        load_examples(str(tmp_path / "gen"), "hin_Deva", "eng_Latn", None)
    examples, info = load_examples(str(tmp_path / "gen.hin_Deva"), "hin_Deva", "eng_Latn", None)
    assert examples == [Example(0, "क", None), Example(1, "ख", None)] and not info.has_references
    examples, info = load_examples(str(tmp_path / "gen.hin_Deva"), "hin_Deva", "san_Deva", 1)
    assert examples == [Example(0, "क", "अ")] and info.has_references


def test_null_cell_is_reported(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"hin_Deva": "क", "eng_Latn": None}])
    with pytest.raises(MedusaError, match="row 0 of eng_Latn"):
        load_examples(str(path), "hin_Deva", "eng_Latn", None)


def test_corrupt_jsonl(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"hin_Deva": "क", "eng_Latn": "a"}\n{"hin_Deva": oops\n', encoding="utf-8")
    with pytest.raises(MedusaError, match="broken.jsonl") as err:
        load_examples(str(path), "hin_Deva", "eng_Latn", None)
    assert "\n" not in str(err.value) and "JSON" in str(err.value)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(MedusaError, match="broken.parquet"):
        load_examples(str(path), "hin_Deva", "eng_Latn", None)


def test_non_utf8_text_file(tmp_path):
    (tmp_path / "t.hin_Deva").write_bytes(b"\xff\xfe\x00bad\n")
    (tmp_path / "t.eng_Latn").write_text("a\n")
    with pytest.raises(MedusaError, match="UTF-8"):
        load_examples(str(tmp_path), "hin_Deva", "eng_Latn", None)


# ---------------------------------------------------------------- hub


def test_hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(MedusaError) as err:
        load_examples("ai4bharat/IN22-Gen", "hin_Deva", "eng_Latn", 5, token=TOKEN)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "unreachable" in message and "flores200-sample" in message
    assert TOKEN not in message and "\n" not in message


def _http_response(status: int, url: str):
    try:
        import httpx2 as http
    except ImportError:  # older huggingface_hub builds on httpx
        import httpx as http
    return http.Response(status, request=http.Request("GET", url))


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: GatedRepoError(
            "401 gated",
            response=_http_response(401, "https://huggingface.co/datasets/ai4bharat/IN22-Gen"),
        ),
        lambda: DatasetNotFoundError(
            "Dataset 'ai4bharat/IN22-Gen' is a gated dataset on the Hub. "
            "You must be authenticated to access it."
        ),
    ],
)
def test_hub_gated_message(monkeypatch, make_error):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise make_error()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(medusa.evaluation.data.datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(MedusaError) as err:
        load_examples("ai4bharat/IN22-Gen", "hin_Deva", "eng_Latn", None, token=TOKEN)
    message = str(err.value)
    assert "https://huggingface.co/datasets/ai4bharat/IN22-Gen" in message
    assert "gated" in message and "--hf-token" in message and "HF_TOKEN" in message
    assert TOKEN not in message
    assert calls and calls[0][1]["token"] == TOKEN and calls[0][1]["split"] == "test"


def test_hub_unknown_error_redacts_token(monkeypatch):
    def fake_load_dataset(*args, **kwargs):
        raise RuntimeError(f"server said: bad header Authorization: Bearer {TOKEN}\nmore detail")

    monkeypatch.setattr(medusa.evaluation.data.datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(MedusaError) as err:
        load_examples("someone/some-data", "hin_Deva", "eng_Latn", None, token=TOKEN)
    assert TOKEN not in str(err.value) and "\n" not in str(err.value)


def test_hub_success_uses_split_and_columns(monkeypatch):
    table = datasets.Dataset.from_list([dict(r, domain="news") for r in ROWS])
    monkeypatch.setattr(medusa.evaluation.data.datasets, "load_dataset", lambda *a, **k: table)
    examples, info = load_examples("ai4bharat/IN22-Gen", "eng_Latn", "hin_Deva", 2, split="test")
    assert examples == [Example(i, r["eng_Latn"], r["hin_Deva"]) for i, r in enumerate(ROWS[:2])]
    assert info == DatasetInfo("ai4bharat/IN22-Gen", "hub", "test", True, 3)
