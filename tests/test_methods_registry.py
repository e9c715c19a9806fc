"""Methods declare themselves (`tokenforge.methods`): discovery, aliases, a third-party plugin, broken plugins."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokenforge import bench, cli, hub, parity
from tokenforge.methods import Method, method_of, registry, resolve

PLUGIN = Path(__file__).parent / "plugin_method"  # a package with its own .dist-info, outside tokenforge
VERBS = {"encode", "decode", "reconstruct", "generate", "evaluate", "bench", "convert"}

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
        for target in [*method.official.values(), *method.parity.values(), *method.verbs.values(),
                       *(c.target for c in [method.bench] if c is not None)]:
            assert _module_exists(target), f"{method.name}: {target} does not exist"
        for option in method.options:
            assert option.flags and set(option.verbs) <= VERBS, f"{method.name}: {option}"
    # the core's lists are the methods' declarations
    assert set(hub.official_sources()) == {n for m in methods.values() for n in m.official}
    assert parity.parity_sources()["shape2vecset"] == "tokenforge.tokenizers.vat.official"
    assert bench.benches()["generator"]["ar"][0] == "tokenforge.generators.autoregressive.bench:main"
    assert method_of("tokenforge.tokenizers.flextok.model.FlexTok").verbs["reconstruct"] == \
        "tokenforge.tokenizers.flextok.cli:reconstruct_verb"
    assert method_of("tokenforge.tokenizers.vqgan.model.VQGAN").verbs == {}


def test_help_lists_verbs_then_the_installed_methods(capsys) -> None:
    assert cli.main(["--help"]) == 0
    shown = capsys.readouterr().out
    verbs_part, methods_part = shown.split("\nmethods")
    listed = [line.split()[0] for line in verbs_part.splitlines()[3:] if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "predict", *[v for v in cli.VERB_ORDER if v in cli.SUBCOMMANDS]]
    assert set(listed) >= VERBS - {"generate"}  # generate: the generate verb's own change
    for name, method in registry().items():  # one row each: name, kind, modality, layout
        assert f"  {name}" in methods_part
        row = next(line.split() for line in methods_part.splitlines() if line.split()[:1] == [name])
        assert row == [name, method.kind, method.modality, method.layout]
    for gone in ("flextok reconstruct", "vat reconstruct", "example-hello", "enat-generate", "ecar-generate"):
        assert gone not in shown


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


def test_a_method_from_a_separate_package_plugs_in(monkeypatch, fresh_registry, capsys, tmp_path: Path,
                                                  shared_data: Path) -> None:
    """Listed by --help and served by encode / decode / reconstruct, with no change to tokenforge's code."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    methods = registry()
    assert set(EXPECTED) < set(methods)
    plugged = resolve("example")  # by its alias
    assert isinstance(plugged, Method) and plugged.name == "examplecodec" and plugged.kind == "tokenizer"
    assert cli.main(["--help"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if "examplecodec" in line)
    assert row == ["examplecodec", "tokenizer", "image", "grid"]
    from tokenforge_example_method.model import ExampleCodec

    model = hub.save_pretrained(ExampleCodec(patch=4, levels=8), tmp_path / "codec")
    images = [str(shared_data / "images" / name) for name in ("coffee.png", "astronaut.png")]
    common = ["--model", str(model), "--size", "32", "--device", "cpu"]
    assert cli.main(["reconstruct", *images, "--out", str(tmp_path / "rec"), *common]) == 0
    assert cli.main(["encode", *images, "--out", str(tmp_path / "codes"), *common]) == 0
    assert cli.main(["decode", str(tmp_path / "codes"), "--out", str(tmp_path / "dec"), *common]) == 0
    metrics = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    assert metrics["method"] == "examplecodec" and metrics["files"]["coffee.png"]["tokens"] == 64  # 8 x 8 blocks
    assert metrics["mean"]["psnr_db"] > 15  # 512 colours per 4x4 block of a real photo: far from noise (~8 dB)
    header = json.loads(str(np.load(tmp_path / "codes" / "coffee.codes.npz")["header"]))
    assert (header["method"], header["layout"], header["input"]["size"]) == ("examplecodec", "grid", [32, 32])
    for name in ("coffee", "astronaut"):  # encode + decode = reconstruct's right half, bit for bit
        pair = np.asarray(Image.open(tmp_path / "rec" / f"{name}.png"))
        assert np.array_equal(pair[:, 32:], np.asarray(Image.open(tmp_path / "dec" / f"{name}.png")))


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
