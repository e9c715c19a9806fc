"""Docs that run: every fenced ```python and ```bash/```sh/```shell block of README.md and docs/**/*.md.

Convention (issue 19, deliverable 9):
- A block runs unless the line right before its fence is ``<!-- snippet: skip (REASON) -->``; the reason is
  required (GPU-only, paper-size runs, releases that are not in ../shared, the whole suite).
- Each markdown file gets one working folder; its blocks run there in document order, as a reader would type
  them (a later block may use what an earlier one wrote). Running one block with ``-k`` runs the earlier
  blocks of its file first.
- The folder starts as a copy of a workspace made once per session, holding the names the docs use:
  ``configs/`` and ``tools/`` (the repository's), ``../shared`` (the real data and fixtures), ``photos/``,
  ``photo.jpg``, ``clip.flac``, ``cow.ply`` (bundled samples), ``shards/images`` (image shards of
  ../shared/data/images), ``tokens/images`` (their 8x8 tokens from a tiny VQGAN) and official-format files under
  their release names (made from the tiny checkpoints in ../shared/fixtures).
- Bash blocks run under ``set -eo pipefail`` with ``tokenforge`` on PATH; ``tokenforge fit`` gets
  ``--trainer.max_steps $TOKENFORGE_DOCS_MAX_STEPS`` (2) appended, so every fit in the docs trains for seconds.
  Python blocks run with the checkout's interpreter. Both must exit 0 within the timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LANGS = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
DIRECTIVE = re.compile(r"^<!--\s*snippet:\s*(?P<body>.*?)\s*-->$")
SKIP = re.compile(r"^skip\s*\((?P<reason>.*)\)$")
TIMEOUT_S = int(os.environ.get("TOKENFORGE_DOCS_TIMEOUT", "300"))
MAX_STEPS = os.environ.get("TOKENFORGE_DOCS_MAX_STEPS", "2")


@dataclass
class Snippet:
    path: Path       # the markdown file
    line: int        # line of the opening fence (1-based)
    lang: str        # "python" or "bash"
    code: str
    skip: str | None  # the reason, when marked skip
    directive: str | None  # the raw directive text, if any

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def parse(path: Path) -> list[Snippet]:
    lines = path.read_text().splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match.group(1), match.group(2).lower()
        start = i
        i += 1
        body = []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in LANGS:
            continue
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        directive = DIRECTIVE.match(prev)
        raw = directive.group("body") if directive else None
        skip = None
        if raw is not None:
            found = SKIP.match(raw)
            skip = found.group("reason").strip() if found else None
        code = textwrap.dedent("\n".join(body)) if indent else "\n".join(body)
        out.append(Snippet(path, start + 1, LANGS[lang], code + "\n", skip, raw))
    return out


SNIPPETS = [snippet for path in markdown_files() for snippet in parse(path)]


def test_snippets_found_and_every_skip_has_a_reason() -> None:
    assert len(SNIPPETS) >= 10, [s.id for s in SNIPPETS]
    for snippet in SNIPPETS:
        if snippet.directive is not None:
            assert snippet.skip is not None, f"{snippet.id}: unknown directive {snippet.directive!r}"
            assert len(snippet.skip) >= 8, f"{snippet.id}: a skip needs a reason, e.g. skip (needs a GPU)"
    skipped = [s for s in SNIPPETS if s.skip is not None]
    print(f"{len(SNIPPETS)} snippets, {len(SNIPPETS) - len(skipped)} run, {len(skipped)} skipped:")
    for snippet in skipped:
        print(f"  {snippet.id}: {snippet.skip}")
    assert len(skipped) < len(SNIPPETS) / 2, "most of the manual must run"


# --- the workspace --------------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, (f"workspace setup failed: {' '.join(cmd)}\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


WRAPPER = """#!/usr/bin/env bash
# tokenforge for the docs' snippets: a `fit` trains for $TOKENFORGE_DOCS_MAX_STEPS optimiser steps.
real="{real}"
for arg in "$@"; do
  case "$arg" in
    --debug|--quiet) continue ;;
    fit) exec "$real" "$@" --trainer.max_steps "${{TOKENFORGE_DOCS_MAX_STEPS:-2}}" ;;
    *) break ;;
  esac
done
exec "$real" "$@"
"""


class Workspace:
    def __init__(self, root: Path, shared: Path) -> None:
        self.root = root
        self.shared = shared
        self.ws = root / "workspace"
        self.bin = root / "bin"
        self.env = dict(os.environ)
        self.env.update({
            "PATH": f"{self.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "TOKENFORGE_HOME": str(root / "home"),
            "TOKENFORGE_SHARED": str(shared),
            "TOKENFORGE_DOCS_MAX_STEPS": MAX_STEPS,
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        self.env.pop("TOKENFORGE_PROGRESS", None)
        self.dirs: dict[Path, Path] = {}
        self.done: dict[str, str | None] = {}  # snippet id -> None (passed) or the failure
        self.seconds: dict[str, float] = {}

    def build(self) -> None:
        root, ws, data, fixtures = self.root, self.ws, self.shared / "data", self.shared / "fixtures"
        (root / "shared").symlink_to(self.shared)
        (root / "home").mkdir()
        self.bin.mkdir()
        real = shutil.which("tokenforge", path=str(Path(sys.executable).parent)) or "tokenforge"
        wrapper = self.bin / "tokenforge"
        wrapper.write_text(WRAPPER.format(real=real))
        wrapper.chmod(0o755)
        ws.mkdir()
        for name in ("configs", "tools"):
            (ws / name).symlink_to(REPO / name)
        (ws / "photos").mkdir()
        for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"):
            shutil.copy(data / "images" / name, ws / "photos" / name)
        shutil.copy(data / "images" / "rocket.jpg", ws / "photo.jpg")
        shutil.copy(sorted((data / "speech24k").glob("*.flac"))[0], ws / "clip.flac")
        shutil.copy(data / "meshes" / "cow.ply", ws / "cow.ply")
        # official releases under their names, made from the tiny official-format checkpoints in ../shared
        (ws / "vq_ds16_c2i.pt").symlink_to(fixtures / "llamagen_vq_train" / "checkpoint.pt")
        setup = root / "setup"
        setup.mkdir()
        (setup / "configs").symlink_to(REPO / "configs")
        run = lambda *args: _run(["tokenforge", "--quiet", *args], setup, self.env)  # noqa: E731
        run("shards", "make", "images", str(data / "images" / "*.png"), str(ws / "shards" / "images"),
            "--max-side", "128", "--val-fraction", "0.2")
        run("fit", "--config", "configs/tokenizers/vqgan/base.yaml", "--config", "configs/tokenizers/vqgan/tiny.yaml",
            "--data.init_args.train",
            str(ws / "shards" / "images"))
        ckpt = next(setup.glob("logs/vqgan_tiny/version_*/checkpoints/last.ckpt"))
        run("shards", "encode", "--tokenizer", str(ckpt), str(ws / "shards" / "images"), str(ws / "tokens" / "images"),
            "--image-size", "32")  # 8x8 tokens: the tiny generators' seq_len 64

    def folder(self, md: Path) -> Path:
        """The working folder of one markdown file: a copy of the workspace (folders copied, files linked)."""
        if md not in self.dirs:
            name = str(md.relative_to(REPO)).replace("/", "_").removesuffix(".md")
            target = self.root / name
            subprocess.run(["cp", "-rs", f"{self.ws}/.", str(target)], check=True)
            self.dirs[md] = target
        return self.dirs[md]

    def execute(self, snippet: Snippet) -> str | None:
        """Run one snippet in its file's folder; None when it exits 0, else what went wrong."""
        cwd = self.folder(snippet.path)
        index = sum(1 for s in SNIPPETS if s.path == snippet.path and s.line < snippet.line)
        script = cwd / f".snippet_{snippet.line}.{'py' if snippet.lang == 'python' else 'sh'}"
        if snippet.lang == "python":
            script.write_text(snippet.code)
            cmd = [sys.executable, script.name]
        else:
            script.write_text("set -eo pipefail\n" + snippet.code)
            cmd = ["bash", script.name]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"{snippet.id} (block {index}) ran past {TIMEOUT_S} s"
        took = time.perf_counter() - start
        self.seconds[snippet.id] = took
        if done.returncode != 0:
            return (f"{snippet.id} exited {done.returncode} after {took:.0f} s in {cwd}\n--- code\n{snippet.code}"
                    f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-6000:]}")
        return None


    def run_page(self, snippet: Snippet) -> None:
        """Run the blocks of ``snippet``'s page up to and including it, each once."""
        for block in SNIPPETS:  # the blocks above it on the same page, as a reader would have run them
            if block.path == snippet.path and block.line <= snippet.line and block.skip is None:
                if block.id not in self.done:
                    self.done[block.id] = self.execute(block)
                if self.done[block.id] is not None:
                    return


def _page_size(snippet: Snippet) -> int:
    """Longest pages first, so the two queues end together."""
    return -sum(len(s.code) for s in SNIPPETS if s.path == snippet.path and s.skip is None)


@pytest.fixture(scope="session")
def workspace(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, shared_data: Path,
              fixtures_dir: Path) -> Workspace:
    space = Workspace(tmp_path_factory.mktemp("docs"), shared_data.parent)
    space.build()
    # the pages are independent: run the selected ones side by side ($TOKENFORGE_DOCS_JOBS, 2), one thread each
    jobs = int(os.environ.get("TOKENFORGE_DOCS_JOBS", "2"))
    selected = {item.callspec.params["snippet"].id for item in request.session.items
                if item.originalname == "test_snippet_runs"}
    last: dict[Path, Snippet] = {}
    for snippet in SNIPPETS:
        if snippet.id in selected and snippet.skip is None:
            last[snippet.path] = snippet
    if jobs > 1 and len(last) > 1:
        space.env["OMP_NUM_THREADS"] = "1"
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(space.run_page, sorted(last.values(), key=_page_size)))
    return space


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, workspace: Workspace) -> None:
    if snippet.skip is not None:
        pytest.skip(f"marked in the markdown: {snippet.skip}")
    workspace.run_page(snippet)
    for earlier in SNIPPETS:
        if earlier.path == snippet.path and earlier.line < snippet.line and workspace.done.get(earlier.id):
            pytest.fail(f"an earlier block of this page failed: {earlier.id}")
    error = workspace.done[snippet.id]
    if error is not None:
        pytest.fail(error, pytrace=False)
    print(f"{snippet.id}: {workspace.seconds[snippet.id]:.1f} s")
