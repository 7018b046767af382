"""The backprop walk-through cannot drift from the code.

Three kinds of fenced blocks in docs/backprop*.md:

* a ```python block right after ``<!-- code: PATH QUALNAME -->`` must equal the live source of
  that function or class (``inspect.getsource``, dedented): the docs show the real code. The
  line above the marker is its visible caption and must name QUALNAME and PATH (a reader does
  not see the comment). ``python docs/scripts/sync_code_blocks.py`` refills stale blocks;
* every other ```python block runs, in order, in one namespace per page (cwd: a temporary
  directory), and must assert something;
* a ```console block holds ``$ decaf ...`` commands, run in-process through ``decaf.cli.main``,
  or ``$ python examples/NAME.py``, run in a subprocess; each must exit 0, and the lines shown
  after it must equal its output once decimal numbers (errors, losses) are masked. A line
  ``...`` stands for any number of lines.

Links from the pages to other files (pages, images, scripts) must resolve.
"""
import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("backprop*.md"))
MARKER = re.compile(r"<!--\s*code:\s*(\S+)\s+(\S+)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
NUMBER = re.compile(r"[-+]?(\d+\.\d*|\.\d+)(e[-+]?\d+)?|[-+]?\d+e[-+]?\d+")


def blocks(page):
    """[(kind, info, code, line)] for every fenced block: kind is 'marked', 'python', 'console'
    or the fence's language; info is (path, qualname) for marked blocks."""
    lines = page.read_text().splitlines()
    out, i, pending = [], 0, None
    while i < len(lines):
        m = MARKER.search(lines[i])
        if m:
            caption = lines[i - 1] if i else ""
            assert m.group(1) in caption and m.group(2).split(".")[-1] in caption, (
                f"{page.name} line {i + 1}: the line above the marker must be a caption naming "
                f"{m.group(2)} and {m.group(1)}, got {caption!r}")
            pending = (m.group(1), m.group(2), i + 1)
            i += 1
            continue
        f = FENCE.match(lines[i])
        if f:
            start, lang = i, f.group(1)
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            code = "\n".join(body)
            if pending and pending[2] == start:
                out.append(("marked", pending[:2], code, start + 1))
            else:
                out.append((lang or "text", None, code, start + 1))
            pending = None
        elif lines[i].strip():
            pending = None          # a marker must sit on the line right before its fence
        i += 1
    return out


def live_source(path, qualname):
    """Dedented source of QUALNAME in the file PATH (a decaf module or any .py file)."""
    file = ROOT / path
    assert file.exists(), f"{path} does not exist"
    rel = pathlib.Path(path)
    if rel.parts[0] == "decaf":
        module = importlib.import_module(".".join(rel.with_suffix("").parts).replace(".__init__", ""))
    else:
        spec = importlib.util.spec_from_file_location(f"_docs_{rel.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return textwrap.dedent(inspect.getsource(obj)).rstrip("\n")


def _cases(kind):
    for page in PAGES:
        for k, info, code, line in blocks(page):
            if k == kind:
                yield pytest.param(page, info, code, line, id=f"{page.name}:{line}")


def test_pages_exist_and_have_blocks():
    names = [p.name for p in PAGES]
    assert "backprop.md" in names and "backprop-conv.md" in names
    for page in PAGES:
        kinds = {b[0] for b in blocks(page)}
        assert {"marked", "python"} <= kinds, f"{page.name} shows no real code or runs nothing"
        unknown = kinds - {"marked", "python", "console", "text"}
        assert not unknown, f"{page.name}: fences must be python, console or text, got {unknown}"


@pytest.mark.parametrize("page,info,code,line", list(_cases("marked")))
def test_code_marker_matches_source(page, info, code, line):
    path, qualname = info
    live = live_source(path, qualname)
    assert code.rstrip("\n") == live, (
        f"{page.name} line {line} shows {qualname} from {path}, but the source has changed; "
        f"re-read the prose, then run python docs/scripts/sync_code_blocks.py. Current source:\n{live}")


def test_every_layer_in_the_issue_is_shown():
    shown = {info for page in PAGES for k, info, _, _ in blocks(page) if k == "marked"}
    qualnames = {q for _, q in shown}
    for needed in ["InnerProduct.forward", "InnerProduct.backward", "ReLU.forward", "ReLU.backward",
                   "SoftmaxWithLoss.forward", "SoftmaxWithLoss.backward", "Convolution.forward",
                   "Convolution.backward", "im2col", "col2im", "Pooling.forward", "Pooling.backward",
                   "lrn_forward", "lrn_backward", "Dropout.forward", "Dropout.backward", "Net.backward"]:
        assert needed in qualnames, f"the docs do not show {needed}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    ran = 0
    for kind, _, code, line in blocks(page):
        if kind != "python":
            continue
        assert re.search(r"^\s*assert\b", code, re.M), f"{page.name} line {line}: the block asserts nothing"
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}, block at line {line} failed: {exc!r}\n{code}") from exc
        ran += 1
    assert ran > 0


def _mask(text):
    return NUMBER.sub("#", text.rstrip())


def _matches(expected, actual):
    """Line-by-line equality after masking decimals; an expected '...' line matches any lines."""
    pattern = "".join(r"(?:.*\n)*?" if line.strip() == "..." else re.escape(_mask(line)) + r"\n"
                      for line in expected)
    return re.fullmatch(pattern, "".join(_mask(line) + "\n" for line in actual)) is not None


def console_commands(code):
    """[(argv, expected output lines)] of a console block."""
    commands = []
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append((shlex.split(line[2:]), []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"console block must start with a '$ ' command, got {line!r}")
    return commands


def run_command(argv):
    """(exit code, stdout lines) of a console command."""
    if argv[0] == "decaf":
        from decaf.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(argv[1:])
        return code, out.getvalue().splitlines()
    assert argv[0] == "python" and len(argv) >= 2 and argv[1].startswith("examples/"), (
        f"only decaf commands and python examples/... run in the docs, got {argv}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / argv[1])] + argv[2:], capture_output=True, text=True,
                          env=env, timeout=120)
    return done.returncode, (done.stdout + done.stderr).splitlines()


@pytest.mark.parametrize("page,info,code,line", list(_cases("console")))
def test_console_blocks_run(page, info, code, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, expected in console_commands(code):
        status, actual = run_command(argv)
        assert status == 0, f"{' '.join(argv)} exited {status}:\n" + "\n".join(actual)
        if expected:
            assert _matches(expected, actual), (
                f"{page.name} line {line}: output of {' '.join(argv)} differs from the docs.\n"
                f"docs:\n" + "\n".join(expected) + "\nactual:\n" + "\n".join(actual))


def test_links_resolve():
    link = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
    for page in PAGES:
        for target, _ in link.findall(page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_mask_and_match():
    assert _matches(["ok a  max abs 1.0e-09 checked 60", "...", "PASS"],
                    ["ok a  max abs 3.2e-10 checked 60", "x", "y", "PASS"])
    assert not _matches(["checked 60"], ["checked 61"])
