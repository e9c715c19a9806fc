"""The core names no method (issue 19): it finds methods through the registry, so a method can come and go without
an edit to it.

Core = ``tokenforge/*.py``, ``tokenforge/nn/``, ``tokenforge/metrics/`` and ``data/``. The rule is checked on the
CODE of every core module, parsed with ``ast``: identifiers (names, attributes, function / class / argument /
keyword names, imported modules) and string constants, which include every user-facing message, help text and
key. Comments and docstrings are not code: they may cite the paper or official code a layer follows ("RMSNorm as
LlamaGen"). A word of the code (split at non-alphanumerics and camel-case boundaries, lower-cased) must not be a
method name; names of five letters or more must not appear inside a word either (``vqgan32``).

The names: every registered method's name and aliases, its official-release and parity-fixture names and their
parts (``var_msrq`` -> ``var``, ``msrq``), and the families' other names that `FAMILY` lists. `ALLOWED` holds
identifiers that contain such a word by coincidence, each with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tokenforge.methods import registry

REPO = Path(__file__).resolve().parents[1]
CORE = ("tokenforge/*.py", "tokenforge/nn/*.py", "tokenforge/metrics/*.py", "data/*.py")

# names the methods' packages use for their families, peers and official code beyond what the registry declares
FAMILY = ("taming", "vocos", "encodec", "seanet", "sd15", "sd21", "sdxl", "dit", "mar", "mage", "maskgit",
          "siglip", "vqkd", "vqvae", "shape2vecset", "llamagen", "msrq")

# parts of parity-fixture names that say which kind of fixture it is, not which method (``wavtokenizer_train``)
FIXTURE_KINDS = ("train",)

# whole identifiers that contain a method's word by coincidence -> why they may stay
ALLOWED = {
    "VAR_KEYWORD": "Python's inspect.Parameter kind (**kwargs), not the VAR method",
    "VAR_POSITIONAL": "Python's inspect.Parameter kind (*args), not the VAR method",
    "running_var": "torch BatchNorm's running-variance buffer (the FID Inception's random init sets it)",
}


def method_names() -> set[str]:
    """Every name a method is known by, lower-cased, with the parts of compound release names."""
    names = set(FAMILY)
    for method in registry().values():
        for name in (method.name, *method.aliases, *method.official, *method.parity):
            names.add(name.lower())
            names.update(part for part in re.split(r"[^a-z0-9]+", name.lower())
                         if len(part) >= 3 and part not in FIXTURE_KINDS)
    return names


def words(text: str) -> set[str]:
    """The lower-case words of an identifier or string: split at non-alphanumerics and camel-case boundaries."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text))
    return {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) + re.split(r"[^a-z0-9]+", text.lower()) if w}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                      str):
                found.add(id(first.value))
    return found


def code_items(source: str) -> list[tuple[int, str]]:
    """(line, text) of every identifier and non-docstring string constant of a module."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    items = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            items.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            items.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            items.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            items.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            items.append((node.lineno, node.arg))
        elif isinstance(node, ast.keyword) and node.arg:
            items.append((node.value.lineno, node.arg))
        elif isinstance(node, ast.alias):
            items += [(node.lineno, node.name)] + ([(node.lineno, node.asname)] if node.asname else [])
        elif isinstance(node, ast.ImportFrom) and node.module:
            items.append((node.lineno, node.module))
    return items


def hits(source: str, names: set[str]) -> list[tuple[int, str, str]]:
    """(line, method name, the code text naming it) for every violation in ``source``."""
    long_names = [n for n in names if len(n) >= 5]
    found = []
    for line, text in code_items(source):
        if text in ALLOWED:
            continue
        seen = words(text)
        named = (seen & names) | {n for n in long_names for w in seen if n in w}
        found += [(line, name, text) for name in sorted(named)]
    return found


def core_files() -> list[Path]:
    return sorted(path for pattern in CORE for path in REPO.glob(pattern))


def test_the_scanner_sees_code_not_comments() -> None:
    names = {"vqgan", "var", "wavtokenizer"}
    source = '''"""Cites VQGAN in a docstring."""
import os  # VQGAN in a comment
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
def f(x, kind=inspect.Parameter.VAR_KEYWORD):
    """VAR in a docstring."""
    table = {"vqgan": 1}
    print(f"use vqgan32 here")
    return x.var(0), VQGANModel
'''
    found = {(line, name) for line, name, _ in hits(source, names)}
    assert found == {(3, "wavtokenizer"), (6, "vqgan"), (7, "vqgan"), (8, "var"), (8, "vqgan")}
    assert words("ECARModule") >= {"ecar", "module"} and "var" in words("is_var")


def test_names_cover_every_registered_method() -> None:
    names = method_names()
    for method in registry().values():
        assert method.name in names and set(method.aliases) <= names
    assert {"var", "msrq", "llamagen", "taming"} <= names


def test_core_module_paths_name_no_method() -> None:
    """A module's own name is code too: ``tokenforge.nn.<family>`` would be imported by that name."""
    names = method_names()
    named = [path.relative_to(REPO).as_posix() for path in core_files() if words(path.stem) & names]
    assert not named, named


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_module_names_no_method(path: Path) -> None:
    found = hits(path.read_text(), method_names())
    assert not found, "\n".join(f"{path.relative_to(REPO)}:{line}: {name!r} in {text[:80]!r}"
                                for line, name, text in found)
