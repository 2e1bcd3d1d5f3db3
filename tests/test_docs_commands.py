"""Every command in the docs is one that runs, and every sub-command and flag they name exists.

The documentation (README.md and docs/*.md) is read as text:

* A fenced block preceded by the line ``<!-- test-command -->`` is run from the repository
  root. ```` ```bash ````: every command (backslash continuations joined, ``#`` comments
  dropped) must exit with status 0. ```` ```console ````: lines starting with ``$ `` are
  commands, and the lines after each one are its exact standard output. ```` ```python ````:
  the block runs as a script (in this process) and must not raise.
  ``obert-train`` / ``obert-deploy`` commands other than ``--help`` run in this process through
  typer's test runner (each would import torch again as a subprocess); ``--help`` calls and
  every other command run as subprocesses, with the test interpreter's ``bin`` folder first on
  ``PATH``. A command whose program is not installed is skipped (obert-deploy next to
  obert-train alone, the ``obert`` main job before it is installed).
* Every ``obert-train`` / ``obert-deploy`` / ``obert`` invocation in any fenced shell block or inline code
  span, marked or not, is checked against the command line itself (its click command tree):
  the sub-command path must exist and every flag written after it must be one of that
  sub-command's options. Inline ``--flags`` of train.md, recipes.md and deploy.md that name no
  program must be an option of some sub-command of that page's command line.

Keep marked commands short (seconds): they run in the test suite.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKER = "<!-- test-command -->"
CLIS = ("obert-train", "obert-deploy", "obert")

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
# A program name at a word start: obert-train, .venv/bin/obert-train, python -m obert_train, ...
# The application ``obert`` counts only before one of its words (``obert`` alone is the name).
_PROGRAM = re.compile(
    r"(?:(?<=\s)|^|(?<=bin/)|(?<=\())"
    r"(?:obert-(?P<a>train|deploy)(?![\w.\[-])|-m\s+obert_(?P<b>train|deploy)\b"
    r"|(?:-m\s+)?(?P<app>obert)(?=\s+(?:quickstart|--help|--version)\b))"
)
_FLAG = re.compile(r"(?:(?<=[\s\[|(/{,])|^)(--?[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a documentation file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marked: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/ (sorted)."""
    files = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    readme = REPO / "README.md"
    return [readme, *files] if readme.is_file() else files


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, with whether a test marker precedes each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marked = j >= 0 and lines[j].strip() == MARKER
        lang = m["info"].strip().split(" ")[0].lower()
        out.append(Block(path, start + 1, lang, "\n".join(body), marked))
        i += 1
    return out


def prose(path: Path) -> str:
    """The text of ``path`` outside fenced blocks."""
    kept: list[str] = []
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        kept.append(line)
    return "\n".join(kept)


def inline_spans(path: Path) -> list[str]:
    """The inline code spans of ``path`` outside fenced blocks, whitespace collapsed."""
    return [" ".join(span.split()) for span in _INLINE.findall(prose(path))]


def shell_commands(body: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and blank lines dropped."""
    commands: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            commands.append(line)
    if pending.strip():
        commands.append(pending.strip())
    return commands


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote: str | None = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def console_commands(body: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block (``$ `` prompts)."""
    pairs: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:].strip(), []))
        elif pairs:
            pairs[-1][1].append(line)
    return [(cmd, "\n".join(out)) for cmd, out in pairs]


@dataclass(frozen=True)
class Invocation:
    """One use of an oBERT command line in the docs: the program and the words after it."""

    where: str
    program: str  # "obert-train", "obert-deploy" or "obert"
    text: str  # everything after the program name, up to a shell separator


def invocations(text: str, where: str) -> list[Invocation]:
    """Every ``obert-train`` / ``obert-deploy`` / ``obert`` call in a command or code span."""
    out: list[Invocation] = []
    for part in re.split(r"&&|\|\||;|\$\(|`", text):
        for m in _PROGRAM.finditer(part):
            name = "obert" if m["app"] else f"obert-{m['a'] or m['b']}"
            rest = part[m.end() :]
            nxt = _PROGRAM.search(rest)
            if nxt:
                rest = rest[: nxt.start()]
            out.append(Invocation(where, name, rest))
    return out


def doc_invocations() -> list[Invocation]:
    """Every invocation in the fenced shell blocks and inline code spans of all doc files."""
    found: list[Invocation] = []
    for path in doc_files():
        rel = path.relative_to(REPO)
        for block in blocks(path):
            if block.lang in ("bash", "sh", "shell"):
                for cmd in shell_commands(block.body):
                    found += invocations(cmd, block.where)
            elif block.lang == "console":
                for cmd, _ in console_commands(block.body):
                    found += invocations(cmd, block.where)
        for span in inline_spans(path):
            if span.startswith(CLIS) or "-m obert_" in span:
                found += invocations(span, f"{rel} (inline `{span}`)")
    return found


def words(text: str) -> list[str]:
    """The words of an invocation's text (brackets, braces and ``|`` separate words)."""
    return [w for w in re.split(r"[\s\[\]{}|]+", text) if w]


def flags(text: str) -> list[str]:
    """The option names (``--x``, ``-x``) written in an invocation's text."""
    return _FLAG.findall(text)


# ---------------------------------------------------------------------------------------------
# Running the marked commands
# ---------------------------------------------------------------------------------------------

BIN = Path(sys.executable).parent
TIMEOUT = 120


@dataclass(frozen=True)
class Runnable:
    """One marked command (or Python block) and, for console blocks, its expected output."""

    where: str
    lang: str
    command: str
    expected: str | None = None


def runnables() -> list[Runnable]:
    out: list[Runnable] = []
    for path in doc_files():
        for block in blocks(path):
            if not block.marked:
                continue
            if block.lang in ("bash", "sh", "shell"):
                out += [Runnable(block.where, "bash", c) for c in shell_commands(block.body)]
            elif block.lang == "console":
                out += [
                    Runnable(block.where, "console", c, expected)
                    for c, expected in console_commands(block.body)
                ]
            elif block.lang == "python":
                out.append(Runnable(block.where, "python", block.body))
            else:
                raise AssertionError(
                    f"{block.where}: a {MARKER} block must be bash, console or python"
                )
    unique: dict[tuple[str, str, str | None], Runnable] = {}
    for item in out:  # a command shown on two pages runs once
        unique.setdefault((item.lang, item.command, item.expected), item)
    return list(unique.values())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", COLUMNS="80")
    return env


def _program(command: str) -> str:
    return command.split()[0]


RUNNABLES = runnables()


def test_docs_have_marked_commands() -> None:
    if not DOCS.is_dir():
        pytest.skip("no docs/ folder next to the package (installed alone)")
    langs = {r.lang for r in RUNNABLES}
    assert {"bash", "console", "python"} <= langs, langs


def _in_process(command: str) -> list[str] | None:
    """argv of an ``obert-train`` / ``obert-deploy`` command that can run in this process.

    Those import torch (seconds per process), so they run through typer's test runner in the
    test process, which has torch loaded already. ``--help`` calls (no torch), anything with
    shell syntax and every other program run as a subprocess, through the installed scripts.
    """
    if re.search(r"[$|&;<>*`]", command):
        return None
    argv = shlex.split(command)
    if argv[0] not in CLIS or "--help" in argv or "-h" in argv:
        return None
    return argv


@pytest.mark.parametrize("item", RUNNABLES, ids=[f"{r.where}:{r.command[:40]}" for r in RUNNABLES])
def test_marked_command_runs(item: Runnable, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env()
    monkeypatch.chdir(REPO)
    if item.lang == "python":
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(item.command, item.where, "exec"), namespace)  # the example must not raise
        return
    program = _program(item.command)
    argv = _in_process(item.command)
    if argv is not None:
        app = _typer_app(program)
        if app is None:
            pytest.skip(f"{program} is not installed here")
        from typer.testing import CliRunner

        result = CliRunner().invoke(app, argv[1:], prog_name=program, env={"COLUMNS": "80"})
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
    else:
        if "/" not in program and shutil.which(program, path=env["PATH"]) is None:
            pytest.skip(f"{program} is not installed here")
        if "/" in program and not (REPO / program).exists():
            pytest.skip(f"{program} is not there")
        proc = subprocess.run(
            ["bash", "-c", item.command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert code == 0, (
        f"{item.where}: `{item.command}` exited with {code}\n{stdout[-2000:]}\n{stderr[-2000:]}"
    )
    if item.expected is not None:
        assert stdout.rstrip("\n") == item.expected.rstrip("\n"), (
            f"{item.where}: the output of `{item.command}` differs from the docs"
        )


# ---------------------------------------------------------------------------------------------
# Sub-commands and flags named in the docs
# ---------------------------------------------------------------------------------------------

_APPS = {
    "obert-train": "obert_train.cli.app",
    "obert-deploy": "obert_deploy.cli",
    "obert": "obert.cli",
}


def _typer_app(program: str) -> Any:
    try:
        return importlib.import_module(_APPS[program]).app
    except ImportError:
        return None


def _click_command(program: str) -> Any:
    app = _typer_app(program)
    if app is None:
        return None
    import typer.main

    return typer.main.get_command(app)


def _help_names(command: Any) -> set[str]:
    option = command.get_help_option(
        command.make_context(command.name or "x", [], resilient_parsing=True)
    )
    return set(option.opts) if option is not None else set()


def _options(command: Any) -> set[str]:
    names = _help_names(command)
    for param in command.params:
        if param.param_type_name == "option":
            names |= set(param.opts) | set(param.secondary_opts)
    return names


def _resolve(root: Any, call: Invocation) -> tuple[list[str], Any, str]:
    """The sub-command path, the click command it names and the text after the path.

    Raises:
        LookupError: For a sub-command or group option that does not exist.
    """
    node = root
    path: list[str] = []
    rest = call.text
    while hasattr(node, "commands"):
        ws = words(rest)
        if not ws or not re.fullmatch(r"-{0,2}[a-z][a-z0-9-]*", ws[0]):
            break  # the group named alone, or in prose (`obert-train → ...`)
        word = ws[0]
        if word.startswith("-"):
            if word not in _options(node):
                raise LookupError(
                    f"{call.where}: `{call.program} {' '.join(path)}` has no option {word}"
                )
        elif word in node.commands:
            path.append(word)
            node = node.commands[word]
        else:
            raise LookupError(
                f"{call.where}: `{call.program} {' '.join([*path, word])}`: no such "
                f"sub-command; known: {sorted(node.commands)}"
            )
        rest = rest.split(word, 1)[1]
    return path, node, rest


INVOCATIONS = doc_invocations()


def test_docs_name_both_command_lines() -> None:
    if not DOCS.is_dir():
        pytest.skip("no docs/ folder next to the package (installed alone)")
    programs = {c.program for c in INVOCATIONS}
    assert programs == set(CLIS), programs


def _grouped() -> Iterator[tuple[str, list[Invocation]]]:
    for program in CLIS:
        yield program, [c for c in INVOCATIONS if c.program == program]


@pytest.mark.parametrize(("program", "calls"), list(_grouped()), ids=list(CLIS))
def test_doc_subcommands_and_flags_exist(program: str, calls: list[Invocation]) -> None:
    root = _click_command(program)
    if root is None:
        pytest.skip(f"{program} is not installed here")
    problems: list[str] = []
    for call in calls:
        try:
            path, command, rest = _resolve(root, call)
        except LookupError as err:
            problems.append(str(err))
            continue
        if hasattr(command, "commands"):
            continue  # a group named alone (e.g. `obert-train recipe`)
        known = _options(command)
        for flag in flags(rest):
            if flag not in known:
                problems.append(
                    f"{call.where}: `{program} {' '.join(path)}` has no option {flag} "
                    f"(known: {' '.join(sorted(known))})"
                )
    assert not problems, "\n".join(problems)


#: Files whose inline ``--flags`` (in code spans naming no program) belong to one command line.
PROSE_FLAGS = {"train.md": "obert-train", "recipes.md": "obert-train", "deploy.md": "obert-deploy"}


def _all_options(node: Any) -> set[str]:
    names = _options(node)
    for child in getattr(node, "commands", {}).values():
        names |= _all_options(child)
    return names


@pytest.mark.parametrize(("name", "program"), sorted(PROSE_FLAGS.items()))
def test_flags_in_prose_exist(name: str, program: str) -> None:
    path = DOCS / name
    if not path.is_file():
        pytest.skip(f"no {path}")
    root = _click_command(program)
    if root is None:
        pytest.skip(f"{program} is not installed here")
    known = _all_options(root)
    unknown = [
        (span, flag)
        for span in inline_spans(path)
        if not invocations(span, name)
        for flag in flags(span)
        if flag not in known
    ]
    assert not unknown, f"{name}: flags that no `{program}` sub-command has: {unknown}"


# ---------------------------------------------------------------------------------------------
# Markdown that renders on the site as on GitHub
# ---------------------------------------------------------------------------------------------

_ITEM = re.compile(r"^(?P<indent> *)(?:[-*+]|\d+\.) ")
#: Pages owned elsewhere whose known rendering problems are reported, not hidden.
_KNOWN_BAD: dict[str, str] = {}


def list_problems(path: Path) -> list[str]:
    """Lists that Python-Markdown (the site) renders differently from GitHub.

    Python-Markdown needs a blank line between a paragraph and a list (GitHub does not), and
    indents the blocks inside a list item (a paragraph after a blank line, a code block) by 4
    spaces, where GitHub accepts the item's text column (2 or 3).
    """
    problems: list[str] = []
    fence: str | None = None
    prev = ""
    in_item = after_blank = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if fence is not None:
            if text.startswith(fence):
                fence = None
            prev = line
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening["fence"]
        item = _ITEM.match(line)
        if item and not item["indent"] and not opening:
            starts_list = not in_item and prev.strip()
            if starts_list and not prev.startswith("|") and not prev.lstrip().startswith("<!--"):
                problems.append(
                    f"{path.name}:{n}: a list right after a paragraph (add a blank line)"
                )
            in_item, after_blank = True, False
        elif not text:
            after_blank = True
        elif in_item and after_blank:
            indent = len(line) - len(line.lstrip())
            if indent == 0:
                in_item = False
            elif indent < 4:
                problems.append(
                    f"{path.name}:{n}: a block inside a list item indented {indent} spaces (use 4)"
                )
            after_blank = False
        prev = line
    return problems


_PAGES = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=_KNOWN_BAD[p.name], strict=False))
        if p.name in _KNOWN_BAD
        else p
        for p in _PAGES
    ],
    ids=[str(p.relative_to(DOCS)) for p in _PAGES],
)
def test_lists_render_on_the_site(page: Path) -> None:
    problems = list_problems(page)
    assert not problems, "\n".join(problems)
