"""Package discovery for tokenforge's namespace layout.

The four top-level folders have no ``__init__.py``: they are portions of the
``tokenforge`` namespace (``tokenizers/`` becomes ``tokenforge.tokenizers``),
so a root-level ``tokenizers`` never shadows Hugging Face's package. This file
only maps folders to package names; all metadata lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
PORTIONS = {
    "tokenforge": "tokenforge",
    "tokenforge.tokenizers": "tokenizers",
    "tokenforge.generators": "generators",
    "tokenforge.data": "data",
}


def _packages() -> list[str]:
    found = []
    for name, folder in PORTIONS.items():
        found.append(name)
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            if "__pycache__" not in rel.parts:
                found.append(".".join([name, *rel.parts]))
    return found


setup(packages=_packages(), package_dir=PORTIONS)
