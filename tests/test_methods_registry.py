"""Methods declare themselves (`tokenforge.methods`): discovery, aliases, a third-party plugin, broken plugins."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tokenforge import bench, cli, hub, parity
from tokenforge.methods import Method, method_of, registry, resolve

PLUGIN = Path(__file__).parent / "plugin_method"  # a package with its own .dist-info, outside tokenforge

EXPECTED = {  # name: (kind, modality)
    "vqgan": ("tokenizer", "image"), "wavtokenizer": ("tokenizer", "audio"), "tokenflow": ("tokenizer", "image"),
    "flextok": ("tokenizer", "image"), "vat": ("tokenizer", "mesh"), "klvae": ("tokenizer", "image"),
    "autoregressive": ("generator", "any"), "enat": ("generator", "image"), "ecar": ("generator", "image"),
    "linfusion": ("generator", "image"),
}


@pytest.fixture()
def fresh_registry():
    """Discovery runs again inside the test and again after it (sys.path is restored by monkeypatch)."""
    registry.cache_clear()
    yield
    registry.cache_clear()


def _module_exists(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


def test_every_method_is_discovered_with_its_fields() -> None:
    methods = registry()
    assert {name: (m.kind, m.modality) for name, m in methods.items()} == EXPECTED
    for method in methods.values():
        assert method.layout and method.package.startswith("tokenforge.")
        for target in [*method.official.values(), *method.parity.values(), method.reconstruct,
                       *(c.target for c in [method.bench, *method.commands] if c is not None)]:
            if target is not None:
                assert _module_exists(target), f"{method.name}: {target} does not exist"
    # the core's lists are the methods' declarations
    assert set(hub.official_sources()) == {n for m in methods.values() for n in m.official}
    assert parity.parity_sources()["shape2vecset"] == "tokenforge.tokenizers.vat.official"
    assert bench.benches()["generator"]["ar"][0] == "tokenforge.generators.autoregressive.bench:main"
    assert {"flextok", "tokenflow", "vat", "encode", "decode", "generate", "enat-generate", "ecar-generate",
            "linfusion"} <= set(cli.subcommands())
    assert method_of("tokenforge.tokenizers.flextok.model.FlexTok").reconstruct == "tokenforge.tokenizers.flextok.cli"
    assert method_of("tokenforge.tokenizers.vqgan.model.VQGAN").reconstruct is None


def test_listing_methods_imports_no_torch() -> None:
    code = "import sys; from tokenforge.methods import registry; registry(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("alias", ["autoregressive", "ar", "gpt", "llamagen"])
def test_aliases_resolve_to_one_method(alias: str) -> None:
    assert resolve(alias).name == "autoregressive"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown method 'nope'.*llamagen"):
        resolve("nope")


def test_a_method_from_a_separate_package_plugs_in(monkeypatch, fresh_registry, capsys) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN))
    methods = registry()
    assert set(EXPECTED) < set(methods)
    plugged = resolve("example")  # by its alias
    assert isinstance(plugged, Method) and plugged.name == "examplecodec" and plugged.kind == "tokenizer"
    assert cli.main(["--help"]) == 0
    assert "example-hello" in capsys.readouterr().out
    assert cli.main(["example-hello", "there"]) == 0
    assert capsys.readouterr().out.strip() == "hello from examplecodec there"


def _dist(root: Path, name: str, target: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tokenforge.methods]\n{name} = {target}\n")


@pytest.mark.parametrize("target", ["tokenforge_no_such_module.method:METHOD", "json:dumps"])
def test_a_broken_entry_point_is_one_warning(tmp_path: Path, monkeypatch, fresh_registry, target: str) -> None:
    _dist(tmp_path, "brokenmethod", target)
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        methods = registry()
        registry()  # cached: no second warning
    lines = [str(w.message) for w in caught if "method entry point" in str(w.message)]
    assert len(lines) == 1 and "brokenmethod" in lines[0] and "\n" not in lines[0]
    assert set(methods) == set(EXPECTED)
