"""`tokenforge bench --model CONFIG_OR_CHECKPOINT`: the method comes from the model, its bench measures that model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenforge import bench, cli, hub
from tokenforge.config_models import build_model
from tokenforge.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
VAT_TINY = REPO / "configs/tokenizers/vat/tiny.yaml"
QUICK = ["--device", "cpu", "--batch", "1", "--resolutions", "8", "--dtypes", "fp32", "--repeats", "1",
         "--warmup", "0", "--mc-shapes", "1"]


def rows(out: str) -> list[dict[str, str]]:
    return [dict(cell.split("=", 1) for cell in line.split("  ")) for line in out.splitlines() if "workload=" in line]


def test_every_method_config_resolves_to_its_bench() -> None:
    for overlay in sorted((REPO / "configs").glob("*/*/*.yaml")):
        if overlay.name == "base.yaml":
            continue
        method = overlay.parent.name
        try:
            found = bench.method_of_model(str(overlay))
        except UsageError as error:  # only a method without a bench may refuse
            assert method in ("klvae", "vqgan") and "has no bench" in str(error), error
            continue
        assert found.bench is not None and found.package.endswith(method), (overlay, found.name)


def test_bench_model_config_runs_the_methods_bench(capsys) -> None:
    assert cli.main(["bench", "--model", str(VAT_TINY), *QUICK]) == 0
    measured = rows(capsys.readouterr().out)
    assert [r["workload"] for r in measured] == ["encode", "decode"]
    assert all(r["size"] == "tiny" and r["params_m"] == "0.2" for r in measured)
    assert measured[0]["points"] == "512"  # surface points per shape: the config's data.num_points


def test_bench_model_checkpoint_measures_its_weights(tmp_path: Path, capsys) -> None:
    model = build_model(VAT_TINY, {"dim": 32, "num_heads": 2})  # a size no config has: the checkpoint's own
    folder = hub.save_pretrained(model, tmp_path / "vat_small_dim")
    assert cli.main(["bench", "--model", str(folder), "--points", "64", *QUICK]) == 0
    measured = rows(capsys.readouterr().out)
    assert measured and all(r["size"] == "vat_small_dim" for r in measured)  # the folder's name
    params = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    assert all(float(r["params_m"]) == params for r in measured) and measured[0]["points"] == "64"


def test_old_forms_stay_as_aliases(capsys) -> None:
    assert bench.resolve(["tokenizer", "vat", "--size", "tiny"]) == bench.resolve(["vat", "--size", "tiny"])
    assert bench.resolve(["data", "--workers", "0"])[1] == ["--workers", "0"]
    assert cli.main(["bench", "--help"]) == 0
    assert "--model CONFIG_OR_CHECKPOINT" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--model", "configs/tokenizers/klvae/tiny.yaml"], "method klvae has no bench"),
    (["--model", "no_such_checkpoint.ckpt"], "no_such_checkpoint.ckpt"),
    (["nothing"], "nothing to measure called 'nothing'"),
])
def test_bench_errors_are_one_line(argv: list[str], message: str, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# the quickest options of each method's bench (CPU, one repeat, no warm-up)
QUICK_BY_METHOD = {
    "vat": QUICK,
    "wavtokenizer": ["--device", "cpu", "--batches", "1", "--seconds", "0.5", "--dtypes", "fp32", "--repeats", "1",
                     "--warmup", "0"],
    "flextok": ["--device", "cpu", "--batch", "1", "--repeats", "1", "--warmup", "0", "--attention", "sdpa",
                "--dtypes", "fp32", "--ks", "1", "--steps", "1"],
    "tokenflow": ["--device", "cpu", "--batch", "1", "--repeats", "1", "--warmup", "0", "--dtypes", "fp32"],
    "autoregressive": ["--device", "cpu", "--batch", "1", "--dtype", "fp32", "--repeats", "1", "--warmup", "0",
                       "--no-compile", "--no-train", "--top-k", "10"],
    "ecar": ["--device", "cpu", "--batch", "1", "--dtype", "fp32", "--repeats", "1", "--warmup", "0",
             "--ecar-steps", "1", "--dit-steps", "2"],
    "enat": ["--device", "cpu", "--batch", "1", "--steps", "2", "--dtypes", "fp32", "--repeats", "1", "--warmup", "0"],
    "linfusion": ["--device", "cpu", "--resolutions", "64", "--dtype", "float32", "--attention", "linfusion",
                  "--warmup", "0", "--repeats", "1"],
}


@pytest.mark.parametrize("method", sorted(QUICK_BY_METHOD))
def test_bench_model_tiny_config_of_every_method(method: str, capsys) -> None:
    import torch

    tiny = next((REPO / "configs").glob(f"*/{method}/tiny.yaml"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["bench", "--model", str(tiny), *QUICK_BY_METHOD[method]]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "tiny" in out, out  # every bench labels its rows with the model it measured
