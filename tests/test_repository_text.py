"""The repository describes the product: what it is, how to use it, what was measured. These checks
keep it so: no tracked file narrates how the product was made, the README stays one readable page,
every link in the docs resolves, and every measured file is listed in docs/measured/MANIFEST.json
with its provenance and cited by a page."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "docs" / "measured"
MANIFEST = MEASURED / "MANIFEST.json"
README_MAX_LINES = 300
BINARY = (".safetensors", ".gz", ".png", ".gguf", ".pt", ".bin", ".jpg")

# Words that tell how the product was made rather than what it is. A round of work is not a
# "session"; an issue
# number is not history; a plan is not a fact; a particular GPU machine's file transfer is not a
# recipe.
FORBIDDEN = {
    "a round of work": re.compile(r"\bsessions?\b", re.IGNORECASE),
    "an issue number": re.compile(r"\bissues?\s*#?\d+|\(#\d+\)", re.IGNORECASE),
    "a plan": re.compile(r"\bNEXT\b|\bTODO\b|(?i:\bplanned\b|not (?:run|measured) yet)"),
    "a superseded state": re.compile(
        r"shipped until|trained in a later|before the adapter shipped|"
        r"measured before the|in a later (?:round|run)",
        re.IGNORECASE,
    ),
    "a machine's file transfer": re.compile(
        r"\.datatxz|\.stage/|/root/|device time used|calls as run|" r"\(carry |\bcarry \.",
        re.IGNORECASE,
    ),
    "a diary heading": re.compile(r"^#+\s*(?:Latest|Earlier)\b", re.IGNORECASE),
}
# the Unix process session and pytest's fixture scope are the product's own words
ALLOWED = re.compile(
    r'scope="session"|start_new_session|getsid|\bsid\b|process group, session|\b(?:its|our)'
    r' session\b'
)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.split("\0") if p and (ROOT / p).is_file()]


def text_files() -> list[Path]:
    own = Path(__file__).resolve()
    return [p for p in tracked_files() if p.suffix not in BINARY and p.resolve() != own]


def test_no_tracked_file_narrates_how_the_product_was_made():
    found = []
    for path in text_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            if ALLOWED.search(line):
                continue
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_patterns_catch_what_they_name():
    """The check above can fail: each pattern matches a line of the kind it forbids, and not the
    allowed senses."""
    work = "sess" + "ion"  # spelled in parts, so this file states no such fact itself
    samples = {
        "a round of work": f"measured in {work} 10",
        "an issue number": "iss" + "ue 11 asks for 15 %",
        "a plan": "NE" + "XT: the 7B run",
        "a superseded state": "(shipped un" + "til round 9)",
        "a machine's file transfer": "cp /ro" + "ot/out/x .",
        "a diary heading": "## Lat" + "est: drafting",
    }
    for what, line in samples.items():
        assert FORBIDDEN[what].search(line), what
    assert ALLOWED.search(f'@pytest.fixture(scope="{work}")') and not ALLOWED.search(
        f"a later {work}"
    )


def test_the_readme_is_one_readable_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    assert lines[0].startswith("# ")


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def doc_pages() -> list[Path]:
    return [p for p in tracked_files() if p.suffix == ".md"]


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for page in doc_pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)


def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def measured_files() -> set[str]:
    return {p.relative_to(MEASURED).as_posix() for p in tracked_files()
            if MEASURED in p.parents and p != MANIFEST}


def test_every_measured_file_is_in_the_manifest_and_every_entry_exists():
    listed = set(manifest()["files"])
    present = measured_files()
    assert (
        not present - listed
    ), f"measured files missing from MANIFEST.json: {sorted(present - listed)}"
    assert (
        not listed - present
    ), f"MANIFEST.json lists files that are not there: {sorted(listed - present)}"


def test_every_measured_file_has_its_provenance_and_is_cited():
    problems = []
    for name, entry in manifest()["files"].items():
        for key in ("command", "commit", "device", "libraries", "date", "cited_by"):
            if not entry.get(key):
                problems.append(f"{name}: no {key}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(entry.get("date", ""))):
            problems.append(f"{name}: date {entry.get('date')!r} is not YYYY-MM-DD")
        cited = entry.get("cited_by") or []
        for page in [cited] if isinstance(cited, str) else cited:
            path = ROOT / page
            if not path.is_file():
                problems.append(f"{name}: cited_by {page} does not exist")
            elif f"measured/{name}" not in path.read_text(encoding="utf-8"):
                problems.append(f"{name}: {page} does not cite it")
    assert not problems, "\n".join(problems)



MAX_COLUMNS = 100


def long_lines(paths: list[Path], width: int = MAX_COLUMNS) -> list[tuple[Path, int]]:
    """(file, line number) of every line of these Python files wider than ``width`` characters."""
    return [(path, n) for path in paths if path.suffix == ".py"
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > width]


def test_every_python_line_fits_100_columns(tmp_path):
    wide = long_lines(tracked_files())
    assert not wide, "lines over 100 columns: " + ", ".join(
        f"{path.relative_to(ROOT)}:{n}" for path, n in wide[:20])
    # the check can fail: a 101-column line is caught, a 100-column one is not
    planted = tmp_path / "wide.py"
    planted.write_text("x = '" + "z" * 94 + "'\n" + "y = '" + "z" * 95 + "'\n", encoding="utf-8")
    assert long_lines([planted]) == [(planted, 2)]
