"""FSDP (`tokenforge.fsdp.FullyShardedStrategy`) on CPU processes over gloo, as on GPUs over NCCL.

Every run trains the same tiny GPT (`ARModule`, AdamW, warm-up + cosine, gradient clipping at 0.5, EMA 0.9,
dropouts off) on the same 32 seeded token grids, 4 optimiser steps with a global batch of 8: 2 processes x 4 or
1 process x 8. A distributed sampler without shuffling gives rank r the samples r, r+2, ..., so each global batch
is the same set of samples whatever the process count; a resumed run starts its loader after the batches its
checkpoint's step has consumed (as ShardDataModule resumes mid-epoch). Runs:

- ``fsdp2``: 2 processes, sharded, activation checkpointing; saves sharded checkpoints after steps 2 and 4;
- ``single``: 1 process, no strategy (the reference);
- ``resume2``: 2 processes, from ``fsdp2``'s step-2 checkpoint to step 4;
- ``resume1``: 1 process (sharded over one), from the same checkpoint folder to step 4.

Then VAR and ENAT (the tiny ones of tests/test_ddp_generators.py) train sharded in bf16 on 2 processes, and the
``*_fsdp.yaml`` configs are parsed and checked against the sizes they name.

This file is also the script each run executes (``python tests/test_fsdp.py --out ... --devices 2 ...``), since
Lightning's launcher starts the other ranks by running the same command again.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tokenforge.errors import UsageError

#: tiny GPT of the tests: 4x4 grids of a 32-code vocabulary, 2 classes, no dropout (runs must be comparable)
TINY = dict(vocab_size=32, seq_len=16, layout="grid", dim=32, depth=2, num_heads=4, multiple_of=32, num_classes=2,
            class_dropout=0.0, token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0)
GLOBAL_BATCH, STEPS = 8, 4
SAMPLES = GLOBAL_BATCH * STEPS  # one epoch
#: FSDP vs one process: the same maths summed in another order (per-rank means, then their mean) drifts by float32
#: rounding through 4 AdamW steps; 1e-4 is a hundredth of one step's largest update (lr 1e-2)
TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------------- the runs

class TokenGrids(torch.utils.data.Dataset):
    """``SAMPLES`` seeded token grids with class ids, as ShardDataModule(modality="tokens") batches them."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, TINY["vocab_size"], (SAMPLES, 4, 4), generator=gen)
        self.cls = torch.randint(0, TINY["num_classes"], (SAMPLES,), generator=gen)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"ids": self.ids[index], "cls": self.cls[index]}


def full_state(trainer, module) -> dict[str, torch.Tensor]:
    """Every weight of ``module`` (``model.*`` and ``ema.*``) as full tensors on rank 0 ({} on the others)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from tokenforge.fsdp import FullyShardedStrategy

    if isinstance(trainer.strategy, FullyShardedStrategy):
        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def run(out: Path, tag: str, devices: int, sharded: bool, ckpt_path: str | None = None,
        mixed_precision: str | None = None) -> None:
    """One fit of the tiny GPT to step `STEPS`; rank 0 writes ``out/<tag>.pt`` (weights, dtypes, losses)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tokenforge.fsdp import FullyShardedStrategy
    from tokenforge.generators.autoregressive.gpt import GPT
    from tokenforge.generators.autoregressive.module import ARModule
    from tokenforge.lr_schedulers import WarmupCosineLR

    class InOrder(pl.LightningDataModule):
        """`TokenGrids` from the resumed step on, split as a distributed sampler does without shuffling (Lightning's
        own sampler always shuffles). Lightning builds it after restoring a checkpoint's loop state."""

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            trainer = self.trainer
            data = torch.utils.data.Subset(TokenGrids(), range(trainer.global_step * GLOBAL_BATCH, SAMPLES))
            sampler = torch.utils.data.DistributedSampler(data, trainer.world_size, trainer.global_rank, shuffle=False)
            return torch.utils.data.DataLoader(data, batch_size=GLOBAL_BATCH // trainer.world_size, sampler=sampler)

    class Record(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")))

        def on_train_end(self, trainer, module) -> None:
            state = full_state(trainer, module)
            param = next(module.model.parameters())
            if trainer.is_global_zero:
                torch.save({"state": state, "losses": self.losses, "step": trainer.global_step,
                            "param_dtype": str(param.dtype), "param_type": type(param).__name__}, out / f"{tag}.pt")

    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    module = ARModule(GPT(**TINY), ema_decay=0.9, gradient_clip_val=0.5,
                      optimizer=functools.partial(torch.optim.AdamW, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05),
                      lr_scheduler=functools.partial(WarmupCosineLR, warmup_steps=1, min_lr_ratio=0.1))
    strategy = FullyShardedStrategy(mixed_precision=mixed_precision) if sharded else "auto"
    checkpoints = ModelCheckpoint(dirpath=out / f"{tag}_ckpt", filename="step{step}", auto_insert_metric_name=False,
                                  every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS,
                         precision="bf16-mixed" if mixed_precision else "32-true", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[checkpoints, Record()], default_root_dir=out, use_distributed_sampler=False)
    trainer.fit(module, datamodule=InOrder(), ckpt_path=ckpt_path)


def launch(out: Path, tag: str, devices: int, sharded: bool, ckpt_path: Path | None = None,
           mixed_precision: str | None = None) -> dict:
    """Run `run` in fresh processes (Lightning starts the other ranks); returns what rank 0 wrote."""
    args = [sys.executable, __file__, "--out", str(out), "--tag", tag, "--devices", str(devices)]
    args += ["--sharded"] if sharded else []
    args += ["--ckpt-path", str(ckpt_path)] if ckpt_path else []
    args += ["--mixed-precision", mixed_precision] if mixed_precision else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out / f"{tag}.pt")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 2-process FSDP run and the 1-process reference (each test below adds its own runs)."""
    out = tmp_path_factory.mktemp("fsdp")
    return {"out": out, "fsdp2": launch(out, "fsdp2", 2, sharded=True), "single": launch(out, "single", 1, False)}


def test_fsdp_fit_on_two_processes_equals_one_process(runs: dict) -> None:
    fsdp, single = runs["fsdp2"], runs["single"]
    assert fsdp["step"] == single["step"] == STEPS
    assert fsdp["param_type"] == "DTensor" and single["param_type"] == "Parameter"  # it really was sharded
    assert {k.split(".")[0] for k in fsdp["state"]} == {"model", "ema"}  # the EMA copy is sharded and saved too
    moved = max_difference(single["state"], launch_free_initial(single["state"]))
    assert moved > 100 * TOLERANCE  # the weights moved far more than the tolerance
    assert max_difference(fsdp["state"], single["state"]) < TOLERANCE
    # the mean of the ranks' losses (each over its half of the global batch) is the one-process loss
    assert len(fsdp["losses"]) == len(single["losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(fsdp["losses"]), torch.tensor(single["losses"]), rtol=0, atol=1e-5)


def launch_free_initial(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tiny GPT's initial weights (seed 0), keyed as ``state`` (model and EMA start equal)."""
    from tokenforge.generators.autoregressive.gpt import GPT

    torch.manual_seed(0)
    weights = GPT(**TINY).state_dict()
    return {k: weights[k.split(".", 1)[1]] for k in state}


def test_sharded_checkpoint_resumes_bit_exactly_on_the_same_process_count(runs: dict) -> None:
    folder = runs["out"] / "fsdp2_ckpt" / "step2.ckpt"
    assert folder.is_dir() and len(list(folder.glob("*.distcp"))) == 2  # one shard file per rank
    resumed = launch(runs["out"], "resume2", 2, sharded=True, ckpt_path=folder)
    assert resumed["step"] == STEPS and len(resumed["losses"]) == STEPS - 2
    assert resumed["losses"] == runs["fsdp2"]["losses"][2:]
    for key, value in runs["fsdp2"]["state"].items():
        assert torch.equal(resumed["state"][key], value), key


def test_sharded_checkpoint_resumes_on_another_process_count(runs: dict) -> None:
    folder = runs["out"] / "fsdp2_ckpt" / "step2.ckpt"
    resumed = launch(runs["out"], "resume1", 1, sharded=True, ckpt_path=folder)
    assert resumed["step"] == STEPS
    assert max_difference(resumed["state"], runs["fsdp2"]["state"]) < TOLERANCE
    assert max_difference(resumed["state"], runs["single"]["state"]) < TOLERANCE


def test_consolidated_checkpoint_loads_for_inference(runs: dict, tmp_path: Path) -> None:
    from tokenforge.fsdp import consolidate, is_sharded_checkpoint
    from tokenforge.hub import from_pretrained

    folder = runs["out"] / "fsdp2_ckpt" / "step4.ckpt"
    assert is_sharded_checkpoint(folder) and not is_sharded_checkpoint(tmp_path)
    model = from_pretrained(consolidate(folder, tmp_path / "step4.ckpt"))  # one file, read without any process
    assert type(model).__name__ == "GPT"
    for name, value in model.state_dict().items():  # the EMA weights, as every generator checkpoint exports
        assert torch.equal(value, runs["fsdp2"]["state"][f"ema.{name}"]), name
    with pytest.raises(UsageError, match="not a sharded checkpoint folder"):
        consolidate(tmp_path, tmp_path / "x.ckpt")


def fit_kinds(out: Path, fixtures: Path, kinds: list[str]) -> None:
    """VAR and ENAT (tests/test_ddp_generators.py's tiny ones) under FSDP with bf16, one fit after the other in
    the process group torchrun-style variables describe; each rank writes what it saw."""
    import lightning.pytorch as pl
    from test_ddp_generators import build

    from tokenforge.fsdp import FullyShardedStrategy

    torch.set_num_threads(1)
    for kind in kinds:
        module, samples = build(kind, fixtures)
        losses: list[float] = []

        class Losses(pl.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                losses.append(float(outputs["loss"]))

        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=FullyShardedStrategy(), precision="bf16-mixed",
                             max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             callbacks=[Losses()], default_root_dir=out)
        trainer.fit(module, torch.utils.data.DataLoader(samples, batch_size=4))
        param = next(module.model.parameters())
        torch.save({"losses": losses, "step": trainer.global_step, "param_type": type(param).__name__,
                    "param_dtype": str(param.dtype)}, out / f"{kind}_rank{os.environ['LOCAL_RANK']}.pt")


@pytest.mark.parametrize("kinds", [("var", "enat")])
def test_var_and_enat_train_sharded_in_bf16(kinds: tuple[str, ...], tmp_path: Path, fixtures_dir: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "WORLD_SIZE": "2", "NODE_RANK": "0", "LOCAL_RANK": str(rank), "RANK": str(rank)}
        args = [sys.executable, __file__, "--out", str(tmp_path), "--tag", "kinds", "--devices", "2",
                "--kinds", ",".join(kinds), "--fixtures", str(fixtures_dir)]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=400)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-3000:] for e in errors)
    for kind in kinds:
        for rank in range(2):
            done = torch.load(tmp_path / f"{kind}_rank{rank}.pt")
            assert done["step"] == 3 and done["param_type"] == "DTensor", (kind, rank)
            assert done["param_dtype"] == "torch.float32"  # bf16 in compute only: float32 master weights
            assert all(math.isfinite(x) for x in done["losses"]), (kind, done["losses"])


# ---------------------------------------------------------------------------------------------------- configs

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "generators"
FSDP_CONFIGS = sorted(CONFIGS.glob("*/*_fsdp.yaml"))
#: LlamaGen's GPT sizes (autoregressive/models/gpt.py): dim, depth, heads
LLAMAGEN = {"b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1280, 36, 20), "xxl": (1536, 48, 24),
            "3b": (3200, 24, 32)}


def test_fsdp_configs_cover_the_large_generators() -> None:
    names = {p.relative_to(CONFIGS).as_posix() for p in FSDP_CONFIGS}
    assert {f"autoregressive/gpt_{size}_fsdp.yaml" for size in LLAMAGEN} <= names
    assert {"autoregressive/var_d16_fsdp.yaml", "enat/enat_l_fsdp.yaml"} <= names


@pytest.mark.parametrize("config", FSDP_CONFIGS, ids=lambda p: p.name)
def test_fsdp_config_shards_the_size_it_names(config: Path) -> None:
    """Each overlay: the strategy builds from its YAML, bf16 mixed precision, folder checkpoints (no symlinked
    last.ckpt), and the same model and optimiser as the single-GPU overlay of its size where there is one."""
    from tokenforge.config_models import compose
    from tokenforge.fsdp import FullyShardedStrategy

    composed = compose(config)
    trainer = composed["trainer"]
    strategy = trainer["strategy"]
    assert strategy["class_path"] == "tokenforge.fsdp.FullyShardedStrategy"
    built = FullyShardedStrategy(**strategy["init_args"])
    assert built.mixed_precision == "auto" and trainer["precision"] == "bf16-mixed"
    assert all(c["init_args"].get("save_last") != "link" for c in trainer["callbacks"] if "init_args" in c)
    single = config.with_name(config.name.replace("_fsdp", ""))
    if single.is_file():  # torch.compile aside (off under FSDP), the single-GPU size's model and optimiser
        mine, plain = composed["model"]["init_args"], compose(single)["model"]["init_args"]
        assert {k: v for k, v in mine.items() if k != "compile"} == {k: v for k, v in plain.items() if k != "compile"}
    size = config.stem.removesuffix("_fsdp").removeprefix("gpt_")
    if size in LLAMAGEN:
        args = composed["model"]["init_args"]["model"]["init_args"]
        assert (args["dim"], args["depth"], args["num_heads"]) == LLAMAGEN[size]
        assert strategy["init_args"]["activation_checkpointing"] == (size not in ("b", "l"))


def test_generators_name_their_block_class() -> None:
    from tokenforge.fsdp import block_types
    from tokenforge.generators.autoregressive.gpt import GPT
    from tokenforge.generators.autoregressive.var import VAR
    from tokenforge.generators.enat.model import ENAT

    models = {GPT(**TINY): 2, VAR(vocab_size=64, cvae=8, patch_nums=[1, 2], depth=3, embed_dim=32, num_heads=2): 3,
              ENAT(seq_len=16, hidden_size=32, num_heads=4, enc_depth=2, dec_depth=1, codebook_size=32): 3}
    for model, depth in models.items():
        assert sum(isinstance(m, block_types(model)) for m in model.modules()) == depth
    with pytest.raises(UsageError, match="block_types"):
        block_types(torch.nn.Linear(2, 2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one FSDP test run (see the module docstring)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--sharded", action="store_true")
    parser.add_argument("--ckpt-path")
    parser.add_argument("--mixed-precision")
    parser.add_argument("--kinds", help="comma-separated generator kinds for fit_kinds (torchrun-style launch)")
    parser.add_argument("--fixtures", type=Path)
    a = parser.parse_args()
    if a.kinds:
        fit_kinds(a.out, a.fixtures, a.kinds.split(","))
    else:
        run(a.out, a.tag, a.devices, a.sharded, a.ckpt_path, a.mixed_precision)
