"""README.md and docs/*.md name only what exists.

* every repository path they name (in backticks, in shell code blocks, in links) exists; paths
  that runs or users create (output/, datasets/, pretrained/, wheelhouse/, .venv/) are skipped;
* every docs/*.md page is linked from the README, and the README stays short;
* every command-line flag they give one of our entry points (train_net.py, demo.py, tools/*.py,
  ``python -m benchmarks.X`` / ``python -m dcdc.X``) is in that entry point's ``--help``, and
  every ``make`` target and variable is in the Makefile.

Flags are read where a command names its entry point: in shell code blocks and in inline code
such as `python tools/paper_tables.py --runs DIR`. An inline code span that is only a flag
(`--resume`) belongs to the entry point named last before it in the same section (from the
last heading), and fails if the section names none.

The ``--help`` texts come from one subprocess that imports torch and detectron2 once and then
forks one child per entry point (in parallel), so that all of them take seconds, not the ~4 s
of imports each would take alone.
"""
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 250

# made by runs, by `make`, or by the user: not part of the repository
CREATED = ("output/", "datasets/", "pretrained/", "wheelhouse/", ".venv/", "build/")
# last path segments with these extensions are files we mean (a/b alone may be prose: fp32/bf16)
EXTENSIONS = {"py", "yaml", "yml", "md", "sh", "png", "jpg", "cpp", "h", "txt", "json", "ini",
              "cfg", "toml", "in"}
TOP_LEVEL = {p.name for p in REPO.iterdir() if not p.name.startswith(".git")}
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^#{1,6}\s")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCRIPT = re.compile(r"^(?:\./)?((?:tools|benchmarks)/[\w-]+\.py|train_net\.py|demo\.py)$")
MODULE = re.compile(r"^(benchmarks\.[\w.]+|dcdc(?:\.[\w]+)+)$")
MENTION = re.compile(r"(?<![\w/.-])((?:\./)?(?:tools|benchmarks)/[\w-]+\.py|train_net\.py|"
                     r"demo\.py|benchmarks\.bench_\w+|dcdc\.data\.\w+)(?![\w/-])")
FLAG = re.compile(r"^--[A-Za-z0-9][\w-]*")
SEPARATORS = {"&&", "||", ";", "|", "&"}


# ---------------------------------------------------------------------------- markdown parsing
@functools.lru_cache(maxsize=None)
def parse(page):
    """(items, lines): items in page order, each (kind, text, line number):

    * ("heading", text, n)
    * ("command", text, n): a shell command (code block line, continuation lines joined), or an
      inline code span that is not a bare flag (a command, a script name, a path, a name)
    * ("flag", text, n): an inline code span that starts with ``--``
    * ("mention", name, n): an entry point named in prose
    * ("link", target, n)
    * ("error", message, n): a line this parser cannot read reliably
    """
    lines = Path(page).read_text().splitlines()
    items, fence, lang, pending, start = [], None, "", "", 0
    for n, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang = m.group(1), m.group(2).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
                fence = None
                if pending:
                    items.append(("command", pending, start))
                    pending = ""
                continue
            if lang in SHELL_LANGS:
                text = _strip_comment(line)
                if not pending:
                    start = n
                if text.rstrip().endswith("\\"):
                    pending += text.rstrip()[:-1] + " "
                else:
                    pending += text
                    if pending.strip():
                        items.append(("command", pending, start))
                    pending = ""
            continue
        if HEADING.match(line):
            items.append(("heading", line, n))
        if line.count("`") % 2:
            items.append(("error", "an inline code span crosses a line break (this check reads "
                                   "one line at a time): keep each on one line", n))
        for target in LINK.findall(line):
            items.append(("link", target, n))
        prose = LINK.sub(lambda mm: mm.group(0).split("](")[0], line)  # link text only
        spans = list(CODE_SPAN.finditer(prose))
        pos = 0
        for span in [*spans, None]:
            outside = prose[pos:span.start()] if span else prose[pos:]
            for mm in MENTION.finditer(outside):
                items.append(("mention", mm.group(1), n))
            if span is None:
                break
            pos = span.end()
            text = span.group(2).strip()
            if text.startswith("--"):
                items.append(("flag", text, n))
            else:  # a command, a script name or a path: each word is checked as a path
                items.append(("command", text, n))
    return items, lines


def _strip_comment(line):
    """A shell line without its trailing `# comment` (not inside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def tokens(command):
    out = []
    for tok in command.split():
        tok = tok.strip("'\"()")
        if tok:
            out.append(tok)
    return out


# ------------------------------------------------------------------------------------- paths
def path_candidates(token):
    """The parts of a token that name a repository path (relative to the repository root)."""
    token = token.strip("'\"`()[],;")
    if "://" in token or token.startswith(("-", "/", "~", "$")):
        return []
    out = []
    for part in re.split(r"[=:]", token):
        part = part.strip("'\"").rstrip(",;.)")
        if "/" not in part or part.startswith(("/", "~", "$")) or re.search(r"[{}<>]|\.\.\.", part):
            continue
        first, last = part.split("/")[0], part.rstrip("/").split("/")[-1]
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", first):  # a placeholder: OUT_DIR/summary.txt
            continue
        ext = last.rsplit(".", 1)[-1] if "." in last else ""
        if first in TOP_LEVEL or ext in EXTENSIONS or part.startswith(CREATED):
            out.append(part)
    return out


@functools.lru_cache(maxsize=None)
def anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    out = set()
    for line in Path(page).read_text().splitlines():
        if HEADING.match(line):
            title = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower())
            out.add(title.replace(" ", "-"))
    return out


def exists(path):
    path = path[2:] if path.startswith("./") else path
    if path.startswith(CREATED):
        return True
    if any(c in path for c in "*?["):
        return bool(list(REPO.glob(path)))
    return (REPO / path).exists()


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it at {MAX_README_LINES} or " \
                                  "fewer and move details to docs/"


def test_every_doc_page_is_linked_from_the_readme():
    items, _ = parse(README)
    linked = {os.path.normpath(t.split("#")[0]) for kind, t, _ in items if kind == "link"}
    missing = [f"docs/{p.name}" for p in DOCS if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(page):
    items, _ = parse(page)
    bad = []
    for kind, text, n in items:
        if kind == "error":
            bad.append(f"{page.name}:{n}: {text}")
        elif kind == "link":
            target = text.split("#")[0]
            if not target or re.match(r"^[a-z][\w+.-]*:", target):  # anchor only, URL, mailto
                continue
            resolved = (page.parent / target).resolve()
            anchor = text.partition("#")[2]
            if not resolved.exists():
                bad.append(f"{page.name}:{n}: link to {text!r}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                bad.append(f"{page.name}:{n}: link to {text!r}: {resolved.name} has no heading "
                           f"with that anchor ({sorted(anchors(resolved))})")
        elif kind == "command":
            for tok in tokens(text):
                for path in path_candidates(tok):
                    if not exists(path):
                        bad.append(f"{page.name}:{n}: {path!r} does not exist in the repository")
    assert not bad, "\n".join(sorted(set(bad)))


# ------------------------------------------------------------------------------------- flags
def entry_point(tokens_, i):
    """(key, number of tokens it takes) if tokens_[i] starts one of our entry points, else None.
    key: ("script", path) or ("module", name) or ("make",)."""
    tok = tokens_[i]
    m = SCRIPT.match(tok)
    if m:
        return ("script", m.group(1)), 1
    if tok == "-m" and i + 1 < len(tokens_) and MODULE.match(tokens_[i + 1]):
        return ("module", tokens_[i + 1]), 2
    if tok == "make" and (i == 0 or tokens_[i - 1] in SEPARATORS):
        return ("make",), 1
    return None


def mention_key(name):
    name = name[2:] if name.startswith("./") else name
    return ("script", name) if name.endswith(".py") else ("module", name)


def invocations(command):
    """[(entry-point key, argument tokens)] of the entry points a command runs."""
    toks, out, i = tokens(command), [], 0
    while i < len(toks):
        found = entry_point(toks, i)
        if not found:
            i += 1
            continue
        key, width = found
        j = i + width
        while j < len(toks) and toks[j] not in SEPARATORS and not entry_point(toks, j):
            j += 1
        out.append((key, toks[i + width:j]))
        i = j
    return out


def uses(page):
    """[(page, line, key, args)] for every entry-point invocation of a page; bare flag spans
    become invocations of the entry point named last in their section."""
    items, _ = parse(page)
    out, current = [], None
    for kind, text, n in items:
        if kind == "heading":
            current = None
        elif kind == "mention":
            current = mention_key(text)
        elif kind == "command":
            found = invocations(text)
            for key, args in found:
                out.append((page.name, n, key, args))
            if found:
                current = found[-1][0]
            elif MENTION.fullmatch(text.strip()):  # `tools/x.py`, `benchmarks.bench_models`
                current = mention_key(text.strip())
        elif kind == "flag":
            out.append((page.name, n, current, tokens(text)))
    return out


def script_path(key):
    if key[0] == "script":
        return REPO / key[1]
    name = key[1]
    if name.startswith("dcdc."):
        return REPO / "projects" / "DCDC" / (name.replace(".", "/") + ".py")
    return REPO / (name.replace(".", "/") + ".py")


HELP_SERVER = r"""
import json, os, runpy, sys, traceback
if sys.argv[2] == "preload":  # imported once, shared by the forked children
    import torch, detectron2.engine, dcdc  # noqa: F401
keys = json.loads(sys.argv[1])
children = []
for key in keys:
    kind, target, sub = key
    sys.stdout.flush(); sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r); os.dup2(w, 1); os.dup2(w, 2)
            sys.argv = [target, *sub, "--help"]
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    os.close(w)
    children.append((key, pid, r))
out = []
for key, pid, r in children:
    with os.fdopen(r, "rb") as f:
        text = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    out.append([key, os.waitstatus_to_exitcode(status), text])
print(json.dumps(out))
"""


def run_helps(keys, preload=True):
    """{(kind, target, subcommand tuple): (exit status, help text)} for every key; ``preload``
    imports torch, detectron2 and dcdc once before forking (what most entry points import)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    if not hasattr(os, "fork"):
        pytest.skip("the --help runner forks")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    arg = json.dumps([[k[0], k[1], list(k[2])] for k in keys])
    proc = subprocess.run([sys.executable, "-c", HELP_SERVER, arg,
                           "preload" if preload else "-"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(k[0], k[1], tuple(k[2])): (rc, text) for k, rc, text in result}


def help_flags(text):
    """Flags of an argparse help text: those on option lines, before their description."""
    flags = set()
    for line in text.splitlines():
        if re.match(r"^\s{1,4}-", line):
            head = re.split(r"\s{2,}", line.strip())[0]
            flags.update(re.findall(r"--[\w-]+", head))
    return flags


def help_subcommands(text):
    m = re.search(r"^\s+\{([\w,-]+)\}", text, re.M)
    return set(m.group(1).split(",")) if m else set()


@functools.lru_cache(maxsize=None)
def makefile():
    text = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.M))
    variables = set(re.findall(r"^([A-Za-z_]\w*)\s*[?:+]?=", text, re.M))
    return targets, variables


def test_named_flags_exist():
    found = [u for page in PAGES for u in uses(page)]
    bad = []
    # first pass: the scripts and their subcommands
    base = {}
    for page, n, key, args in found:
        if key is None:
            bad.append(f"{page}:{n}: flag {' '.join(args)!r} belongs to no entry point: name the "
                       "tool in the same section")
        elif key[0] != "make":
            if not script_path(key).is_file():
                bad.append(f"{page}:{n}: {key[1]} does not exist")
            elif any(FLAG.match(a) for a in args):  # only the entry points given flags
                base[(key[0], key[1], ())] = None
    helps = run_helps(base)
    subs = set()
    for page, n, key, args in found:
        if key is None or key[0] == "make" or (key[0], key[1], ()) not in helps:
            continue
        positional = [a for a in args if not a.startswith("-")]
        commands = help_subcommands(helps[(key[0], key[1], ())][1])
        if commands and positional and positional[0] in commands:
            subs.add((key[0], key[1], (positional[0],)))
    helps.update(run_helps(subs, preload=False))  # few; subcommand tools are light (wheelhouse)
    for k, (rc, text) in helps.items():
        if rc != 0 or "--help" not in help_flags(text):
            bad.append(f"{' '.join([k[1], *k[2]])} --help failed (exit {rc}):\n{text[-2000:]}")
    targets, variables = makefile()
    for page, n, key, args in found:
        if key is None:
            continue
        if key[0] == "make":
            for a in args:
                if a.startswith("-"):
                    break
                name, is_var, _ = a.partition("=")
                if is_var and name not in variables:
                    bad.append(f"{page}:{n}: make variable {name} is not set in the Makefile")
                elif not is_var and a not in targets:
                    bad.append(f"{page}:{n}: make target {a!r} is not in the Makefile")
            continue
        base_key = (key[0], key[1], ())
        if base_key not in helps:
            continue
        positional = [a for a in args if not a.startswith("-")]
        sub_key = (key[0], key[1], (positional[0],)) if positional else None
        allowed = helps[sub_key][1] if sub_key in helps else helps[base_key][1]
        flags = help_flags(allowed)
        for a in args:
            m = FLAG.match(a)
            if m and m.group(0) not in flags:
                where = " ".join([key[1], *(sub_key[2] if sub_key in helps else ())])
                bad.append(f"{page}:{n}: {where} has no flag {m.group(0)} "
                           f"(its --help lists {sorted(flags)})")
    assert not bad, "\n".join(sorted(set(bad)))
