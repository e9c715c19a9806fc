"""DDP for every trainable generator kind (GPT, VAR, ENAT, E-CAR): two CPU processes over gloo, three steps each.

The two processes are started as torchrun starts them (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR/PORT`` in
the environment, so Lightning launches nothing itself) and run the four fits one after the other in the same
process group. Lightning's distributed sampler gives the ranks different samples; equal weights on both ranks
after the fit (and weights that moved) show that the gradients were averaged. ENAT trains its reuse projection
only on reuse steps: `TrainingModule.partial_backward` lets DDP allow the unused parameters.

This file is also the script each process runs (``python tests/test_ddp_generators.py OUT FIXTURES``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

KINDS = ("gpt", "var", "enat", "ecar")
STEPS, BATCH, SAMPLES = 3, 4, 24


def build(kind: str, fixtures: Path):
    """(Lightning module, one sample -> dict) of a tiny generator of ``kind`` (seeded, dropouts as configured)."""
    from tokenforge.generators.autoregressive.gpt import GPT
    from tokenforge.generators.autoregressive.module import ARModule
    from tokenforge.generators.autoregressive.var import VAR
    from tokenforge.generators.ecar.model import ECAR
    from tokenforge.generators.ecar.module import ECARModule
    from tokenforge.generators.enat.model import ENAT
    from tokenforge.generators.enat.module import ENATModule

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    cls = torch.randint(0, 2, (SAMPLES,), generator=gen)
    if kind == "gpt":
        module = ARModule(GPT(vocab_size=32, seq_len=16, dim=32, depth=2, num_heads=4, multiple_of=32, num_classes=2),
                          ema_decay=0.9)
        ids = torch.randint(0, 32, (SAMPLES, 4, 4), generator=gen)
        return module, [{"ids": ids[i], "cls": cls[i]} for i in range(SAMPLES)]
    if kind == "var":  # multi-scale ids of the VAR VQ-VAE fixture: scales 1..8, 155 ids
        var = VAR(vocab_size=64, cvae=8, patch_nums=[1, 2, 3, 4, 5, 6, 8], depth=2, embed_dim=32, num_heads=2,
                  num_classes=2)
        module = ARModule(var, tokenizer=f"official:var_vqvae:{fixtures / 'var_msrq'}")
        ids = torch.randint(0, 64, (SAMPLES, 155), generator=gen)
        return module, [{"ids": ids[i], "cls": cls[i]} for i in range(SAMPLES)]
    if kind == "enat":
        enat = ENAT(seq_len=16, hidden_size=32, num_heads=4, enc_depth=1, dec_depth=1, codebook_size=32, num_classes=2)
        module = ENATModule(enat, ema_decay=0.9, reuse_prob=0.5)
        ids = torch.randint(0, 32, (SAMPLES, 4, 4), generator=gen)
        return module, [{"ids": ids[i], "cls": cls[i]} for i in range(SAMPLES)]
    ecar = ECAR(latent_channels=4, scales=[2, 4, 8], dim=32, depth=2, num_heads=2, num_classes=2, head_width=32,
                head_depth=2, batch_mul=2)
    latents = torch.randn(SAMPLES, 4, 8, 8, generator=gen)
    return ECARModule(ecar, ema_decay=0.9), [{"latents": latents[i], "cls": cls[i]} for i in range(SAMPLES)]


def fit_all(out: Path, fixtures: Path) -> None:
    """Each kind: DDP fit of `STEPS` steps; every rank writes its weights and the first batch it saw."""
    import lightning.pytorch as pl

    torch.set_num_threads(1)
    rank = int(os.environ["LOCAL_RANK"])

    class FirstBatch(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx == 0:
                self.first = {k: v.clone() for k, v in batch.items()}

    for kind in KINDS:
        module, samples = build(kind, fixtures)
        initial = {k: v.clone() for k, v in module.model.state_dict().items()}
        seen = FirstBatch()
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, limit_val_batches=0, callbacks=[seen], default_root_dir=out)
        trainer.fit(module, torch.utils.data.DataLoader(samples, batch_size=BATCH))
        torch.save({"initial": initial, "final": module.state_dict(), "first": seen.first,
                    "step": trainer.global_step}, out / f"{kind}_rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> dict[str, list[dict]]:
    """Both processes' results per kind (one launch for the four fits)."""
    out = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "WORLD_SIZE": "2", "NODE_RANK": "0", "LOCAL_RANK": str(rank), "RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, __file__, str(out), str(fixtures_dir)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        errors.append(err)
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-3000:] for e in errors)
    return {kind: [torch.load(out / f"{kind}_rank{r}.pt") for r in range(2)] for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_ddp_keeps_the_ranks_weights_identical(ranks: dict[str, list[dict]], kind: str) -> None:
    first, second = ranks[kind]
    assert first["step"] == second["step"] == STEPS
    key = "ids" if "ids" in first["first"] else "latents"
    assert not torch.equal(first["first"][key], second["first"][key])  # the ranks trained on different samples
    assert first["final"].keys() == second["final"].keys()
    for name, value in first["final"].items():
        assert torch.equal(value, second["final"][name]), name  # gradients averaged: bit-identical weights
    trained = {k: v for k, v in first["final"].items() if k.startswith("model.")}
    moved = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, first["initial"][k[6:]])]
    assert len(moved) > len(trained) // 2, kind  # most tensors changed: there was something to keep in step
    if any(k.startswith("ema.") for k in first["final"]):  # the EMA copy followed the live weights on both ranks
        assert any(not torch.equal(first["final"]["ema." + k[6:]], first["initial"][k[6:]]) for k in moved)


if __name__ == "__main__":
    fit_all(Path(sys.argv[1]), Path(sys.argv[2]))
