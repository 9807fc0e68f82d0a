"""The documentation is run: every code block of README.md and docs/, the site's strict build and its API reference.

Each page's blocks run in order, as a reader would run them, in one namespace and in a folder where the
placeholders the pages use exist (`docs_folder`): `"path/or/hub-id"` is a small trained model, `"meeting.mp3"` and
`"talk.flac"` are real speech, `clips` is a list of 16 kHz arrays. `python` blocks are executed, `pycon` blocks
checked as doctests, `bash` blocks run line by line. A block preceded by `<!-- docs-test: skip (reason) -->` is not
run, nor is a block that calls `scripts/setup.sh` (it installs system packages; the suite runs after it). Every
command of every shell block, run or not, has its flags checked against the `--help` of the script or `ast-hf`
command it calls, so a renamed argument fails here.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import speak

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The public modules whose names the API reference must list (each one's __all__).
API_MODULES = ["ast_hf", "ast_hf.training", "ast_hf.tagging", "ast_hf.embeddings", "ast_hf.hear",
               "ast_hf.onnx_export", "ast_hf.fast_inference", "ast_hf.convert"]
# Repository folders the pages name by relative path (examples/recipes/..., ast_hf/data/...).
LINKED_FOLDERS = ("examples", "conversion", "benchmarks", "ast_hf")
RUNNABLE = {"python", "pycon", "bash"}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_MARK = re.compile(r"<!--\s*docs-test:\s*(?P<mark>skip)\b[^>]*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    skip: bool

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.language})"


def page_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the docs-test mark of the line before each."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        body = "\n".join(row[len(match["indent"]):] for row in match["body"].splitlines())
        skip = bool(mark and mark["mark"] == "skip") or "scripts/setup.sh" in body
        blocks.append(Block(page, line, match["info"], body, skip=skip))
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(line)
    return commands


def _called_program(words: list[str]) -> tuple[list[str], list[str]] | None:
    """(the command whose --help lists its flags, the words after it) for a script or `ast-hf` call, else None."""
    for index, word in enumerate(words):
        if word.endswith(".py") and (ROOT / word).is_file():
            return [sys.executable, str(ROOT / word)], words[index + 1:]
        if word == "ast-hf" and index + 1 < len(words):
            return ["ast-hf", words[index + 1]], words[index + 2:]
    return None


# Every program whose --help the tests read: `ast-hf` and its commands, and each script with a main().
ENTRY_POINTS = [
    ("ast-hf",), ("ast-hf", "classify"), ("ast-hf", "export-onnx"), ("ast-hf", "demo"),
    *[(sys.executable, str(path)) for folder in ("examples", "conversion", "benchmarks")
      for path in sorted((ROOT / folder).glob("*.py")) if "def main" in path.read_text()],
]


def _run_help(program: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)


# Runs `--help` of many programs in one Python process (torch and transformers imported once instead of once per
# program): each script by runpy as __main__ with its folder first on sys.path, as `python script.py` would run
# it, and `ast-hf` commands through ast_hf.cli.main. Prints {index: [exit status, stdout, stderr]} as JSON.
_HELP_RUNNER = """
import contextlib, io, json, os, runpy, sys, traceback
results = {}
for index, program in enumerate(json.loads(sys.argv[1])):
    out, err, code, path = io.StringIO(), io.StringIO(), 0, list(sys.path)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if program[0] == "ast-hf":
                from ast_hf.cli import main
                code = main([*program[1:], "--help"]) or 0
            else:
                sys.path.insert(0, os.path.dirname(program[-1]))
                sys.argv = [program[-1], "--help"]
                runpy.run_path(program[-1], run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    sys.path[:] = path
    results[index] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


@functools.cache
def _all_help() -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """The --help of every entry point and every documented `ast-hf` command, in one process (see _HELP_RUNNER);
    where that process itself fails, each program is run on its own."""
    import json

    programs = list(dict.fromkeys([*ENTRY_POINTS, *(tuple(_called_program(words)[0])
                                                     for _, words in _documented_commands())]))
    done = subprocess.run([sys.executable, "-c", _HELP_RUNNER, json.dumps(programs)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        return {program: _run_help(program) for program in programs}
    results = json.loads(done.stdout.splitlines()[-1])
    return {program: subprocess.CompletedProcess([*program, "--help"], *results[str(index)])
            for index, program in enumerate(programs)}


def help_text(program: tuple[str, ...]) -> str:
    result = _all_help().get(program) or _run_help(program)
    assert result.returncode == 0, f"{' '.join(program)} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def _command_words(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ;, &&, ||, | and redirections), comments dropped."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|<>"):
            parts.append([])
        else:
            parts[-1].append(token)
    return [words for words in parts if words]


def _documented_commands() -> list[tuple[Block, list[str]]]:
    calls = []
    for page in PAGES:
        for block in page_blocks(page):
            if block.language == "bash":
                for command in shell_commands(block.code):
                    calls += [(block, words) for words in _command_words(command) if _called_program(words)]
    return calls


def test_pages_have_runnable_blocks_and_few_skips():
    """Most blocks run; a Python block that does not is rare (shell blocks that train for minutes are skipped, and
    their flags are still checked)."""
    blocks = [block for page in PAGES for block in page_blocks(page)]
    runnable = [block for block in blocks if block.language in RUNNABLE]
    skipped_python = [str(block) for block in runnable if block.skip and block.language != "bash"]
    assert len(runnable) > 30 and sum(not block.skip for block in runnable) > len(runnable) // 2
    assert len(skipped_python) <= 2, skipped_python
    unknown = {block.language for block in blocks} - RUNNABLE - {"text", "bibtex", "yaml", "json"}
    assert not unknown, f"code blocks in languages the docs test neither runs nor knows: {unknown}"


@pytest.mark.slow
def test_every_documented_flag_exists():
    """Each --flag a shell block passes to an example, conversion or benchmark script or to `ast-hf` is one that
    the program's --help lists (run or not: a renamed argument fails here)."""
    calls = _documented_commands()
    assert len(calls) > 15
    missing = []
    for block, words in calls:
        program, arguments = _called_program(words)
        known = set(re.findall(r"--[A-Za-z][\w-]*", help_text(tuple(program))))
        for flag in (word.split("=", 1)[0] for word in arguments if word.startswith("--")):
            if flag not in known:
                missing.append(f"{block}: {' '.join(program[-1:])} {flag}")
    assert not missing, "flags the documentation uses that the programs do not take:\n" + "\n".join(missing)


@pytest.mark.slow
@pytest.mark.parametrize("program", ENTRY_POINTS, ids=lambda program: " ".join(
    Path(word).name for word in program[-2:] if word != sys.executable))
def test_every_entry_point_answers_help(program):
    assert "usage:" in help_text(program)


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory, word_model) -> Path:
    """A folder holding what the pages' placeholders name, and links to the repository folders they name."""
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(word_model, folder / "path" / "or" / "hub-id")
    rate = 16000
    speech = np.concatenate([speak("yes", "en"), np.zeros(rate // 2, np.float32), speak("down", "en-us"),
                             np.zeros(rate // 2, np.float32), speak("up", "en-gb")])
    (folder / "recordings").mkdir()
    raw = folder / "speech.f32"
    speech.astype(np.float32).tofile(raw)
    for target, extra in [("meeting.mp3", ["-ac", "2", "-ar", "44100"]), ("talk.flac", ["-ar", "22050"]),
                          ("recordings/call.wav", []), ("recordings/note.ogg", ["-ac", "2"])]:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(rate), "-ac", "1", "-i", str(raw), *extra,
                        str(folder / target)], check=True)
    raw.unlink()
    (folder / "words.txt").write_text("yes\nno\nup\n")
    for name in LINKED_FOLDERS:
        (folder / name).symlink_to(ROOT / name)
    return folder


def _run_shell(block: Block, folder: Path) -> None:
    for command in shell_commands(block.code):
        result = subprocess.run(["bash", "-c", "set -eo pipefail; " + command], cwd=folder, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{block}: `{command}` exited {result.returncode}:\n{result.stderr[-3000:]}"


def _run_doctest(block: Block, namespace: dict) -> None:
    test = doctest.DocTestParser().get_doctest(block.code, namespace, str(block), str(block.page), block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    assert runner.failures == 0, "".join(report)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_page_runs(page, docs_folder, speech, monkeypatch):
    """Every block of the page that is not marked skip runs without error, and every pycon block prints what the page
    shows."""
    blocks = [block for block in page_blocks(page) if block.language in RUNNABLE and not block.skip]
    if not blocks:
        pytest.skip("no runnable blocks")
    monkeypatch.chdir(docs_folder)
    namespace = {"__name__": "__docs__", "clips": [clip.copy() for clip in speech[:3]]}
    for block in blocks:
        if block.language == "bash":
            _run_shell(block, docs_folder)
        elif block.language == "pycon":
            _run_doctest(block, namespace)
        else:
            try:
                exec(compile(block.code, str(block), "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{block} raised {type(error).__name__}: {error}") from error


def _inventory_names(site: Path) -> set[str]:
    """The object names of the Sphinx inventory (objects.inv) mkdocstrings writes."""
    header, _, body = site.joinpath("objects.inv").read_bytes().partition(b"zlib.\n")
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


@pytest.mark.slow
def test_site_builds_strict_with_every_public_name(tmp_path):
    mkdocs = shutil.which("mkdocs")
    assert mkdocs, "mkdocs is missing: pip install -e '.[docs]'"
    site = tmp_path / "site"
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(site)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    names = _inventory_names(site)
    missing = [f"{module}.{name}" for module in API_MODULES for name in importlib.import_module(module).__all__
               if f"{module}.{name}" not in names]
    assert not missing, f"public names missing from the API reference: {missing}"
    for page in (ROOT / "docs").rglob("*.md"):
        built = site / page.relative_to(ROOT / "docs").with_suffix("") / "index.html"
        if page.name == "index.md":
            built = site / page.relative_to(ROOT / "docs").parent / "index.html"
        assert built.is_file(), f"{page} was not built"
