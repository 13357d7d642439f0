"""Issue 16, "docs that ship": what the package cites is in the repository, and the README's
code and shown output are what the package does.

* every ``docs/theory.md §X`` cited anywhere in the package, the docs or the README names a
  heading of docs/theory.md;
* no message, help text or result field cites the unshipped derivation notes (MATH.md,
  REFERENCE_VALUES.md): string constants other than docstrings are read with ``ast``, and every
  command's ``--help`` is rendered;
* every ``python`` block of README.md runs (in a temporary folder, with the files the README's
  preceding shell block writes), and the tour's ``$ meanfield ...`` outputs match a fresh run.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from meanfield.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
THEORY = ROOT / "docs" / "theory.md"
UNSHIPPED = re.compile(r"MATH\.md|REFERENCE_VALUES")
CITE = re.compile(r"theory\.md\)?,? §\s*([A-Z]?\d+(?:\.\d+)*)")


def _headings() -> set[str]:
    keys = set()
    for line in THEORY.read_text().splitlines():
        m = re.match(r"#+\s+([A-Z]?\d+(?:\.\d+)*)\.?\s", line)
        if m:
            keys.add(m.group(1))
    return keys


def _shipped_text_files() -> list[Path]:
    return [*sorted((ROOT / "meanfield").rglob("*.py")), *sorted((ROOT / "docs").glob("*.md")), README]


def test_every_theory_section_cited_exists():
    heads = _headings()
    assert {"1", "2.1", "A1.7", "A6.2"} <= heads  # the parser reads the headings
    missing = []
    for f in _shipped_text_files():
        for n, line in enumerate(f.read_text().splitlines(), 1):
            missing += [f"{f.relative_to(ROOT)}:{n}: §{key}" for key in CITE.findall(line) if key not in heads]
    assert not missing, "cited sections with no heading in docs/theory.md:\n" + "\n".join(missing)


def _message_strings(path: Path):
    """String constants of a module that are not docstrings (messages, help, result fields)."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_no_message_cites_the_unshipped_notes():
    bad = [f"{f.relative_to(ROOT)}:{n}: {s.strip()[:80]!r}"
           for f in sorted((ROOT / "meanfield").rglob("*.py"))
           for n, s in _message_strings(f) if UNSHIPPED.search(s)]
    assert not bad, "cite docs/theory.md §... instead:\n" + "\n".join(bad)


def test_no_help_text_cites_the_unshipped_notes():
    group = typer.main.get_command(app)
    for name in [None, *sorted(group.commands)]:
        res = CliRunner().invoke(app, ([name] if name else []) + ["--help"])
        assert res.exit_code == 0, name
        assert not UNSHIPPED.search(res.stdout), f"meanfield {name} --help: {res.stdout}"


def test_readme_links_exist():
    for target in re.findall(r"\]\(((?:docs|figures)/[^)#]+)\)", README.read_text()):
        assert (ROOT / target).exists(), target


# ------------------------------------------------------------------------------------------
# README code blocks
# ------------------------------------------------------------------------------------------

def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def _heredoc_files(cwd: Path) -> None:
    """The files the README's shell blocks write with ``cat > NAME <<'TAG'`` (net.json)."""
    for block in _blocks("bash"):
        for name, _tag, body in re.findall(r"cat > (\S+) <<'(\w+)'\n(.*?)\n\2\n", block, flags=re.S):
            (cwd / name).write_text(body)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block_runs(index, tmp_path):
    code = _blocks("python")[index]
    if "import torch" in code or "meanfield.torch" in code:
        pytest.importorskip("torch")
    _heredoc_files(tmp_path)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, f"README python block {index}:\n{code}\n{res.stderr[-3000:]}"


_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$")


def _same_line(shown: str, got: str) -> bool:
    """Equal token by token; numbers equal as the CLI prints them (6 significant digits)."""
    a, b = shown.split(), got.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        xs, ys = x.strip(",[]{}:"), y.strip(",[]{}:")
        if _NUMBER.match(xs) and _NUMBER.match(ys):
            if f"{float(xs):.6g}" != f"{float(ys):.6g}":
                return False
        elif x != y:
            return False
    return True


def _tour() -> list[tuple[str, list[str]]]:
    """(command line, the output lines the README shows for it) of every ``$ meanfield`` line."""
    runs = []
    for block in _blocks("text"):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            cmd, *out = chunk.rstrip("\n").split("\n")
            runs.append((cmd, out))
    return runs


@pytest.mark.parametrize("cmd, shown", _tour(), ids=[c for c, _ in _tour()])
def test_readme_tour_matches_a_fresh_run(cmd, shown):
    argv = cmd.split()[1:]
    res = CliRunner().invoke(app, argv)
    got = (res.stdout + res.stderr).splitlines()
    if "--json" in argv:
        want = json.loads(shown[0])
        have = json.loads(res.stdout)
        for k, v in want.items():
            if isinstance(v, float):
                assert have[k] == pytest.approx(v, rel=1e-9), k
            else:
                assert have[k] == v, k
        return
    # the shown lines appear in order in the output (an abridged block skips lines)
    j = 0
    for line in (s for s in shown if s.strip()):
        while j < len(got) and not _same_line(line, got[j]):
            j += 1
        assert j < len(got), f"$ {cmd}\nshown: {line!r}\nnot in the output (in order):\n" + "\n".join(got)
        j += 1


def test_no_shipped_file_cites_the_reference_values():
    bad = [f"{f.relative_to(ROOT)}:{n}" for f in _shipped_text_files()
           for n, line in enumerate(f.read_text().splitlines(), 1) if "REFERENCE_VALUES" in line]
    assert not bad, bad
