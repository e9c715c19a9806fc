"""The namespace layout: tokenforge's folders never shadow other packages, and the CLI entry points run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_import_tokenizers_from_repo_root_is_hugging_face() -> None:
    # Python puts the working directory first on sys.path for `-c`, exactly the dangerous case.
    out = run_python("import tokenizers, sys; print(tokenizers.__file__); print(hasattr(tokenizers, 'Tokenizer'))", REPO)
    path, has_class = out.splitlines()
    assert "site-packages" in path and not path.startswith(str(REPO / "tokenizers"))
    assert has_class == "True"


def test_transformers_tokenizer_imports_from_repo_root() -> None:
    out = run_python("from transformers import PreTrainedTokenizerFast; print('ok')", REPO)
    assert out == "ok"


def test_namespace_portions_map_to_folders() -> None:
    out = run_python(
        "import tokenforge.tokenizers.base as t, tokenforge.generators.base as g, tokenforge.hub as h;"
        "print(t.__file__); print(g.__file__); print(h.__file__)",
        Path("/"),
    )
    tok, gen, hub = out.splitlines()
    assert tok == str(REPO / "tokenizers" / "base.py")
    assert gen == str(REPO / "generators" / "base.py")
    assert hub == str(REPO / "tokenforge" / "hub.py")
    for folder in ("tokenforge", "tokenizers", "generators", "data"):
        assert not (REPO / folder / "__init__.py").exists(), f"{folder}/__init__.py would break the namespace"


def test_console_script_and_module_entry_point() -> None:
    script = Path(sys.executable).with_name("tokenforge")
    for command in ([str(script), "--help"], [sys.executable, "-m", "tokenforge", "--help"]):
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd="/").stdout
        assert "fit" in out and "shards" in out
    bad = subprocess.run([str(script), "no-such-command"], capture_output=True, text=True, cwd="/")
    assert bad.returncode == 2 and "unknown command" in bad.stderr
