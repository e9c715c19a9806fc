"""Fully sharded training (FSDP2, ``torch.distributed.fsdp.fully_shard``) through Lightning's own strategy.

`FullyShardedStrategy` is Lightning's ``ModelParallelStrategy`` with every process in one data-parallel group
(no tensor parallelism). It needs no launcher of its own: ``--trainer.devices``, ``--trainer.num_nodes``,
torchrun and SLURM start the processes as for DDP. In YAML (``configs/generators/*/*_fsdp.yaml``)::

    trainer:
      strategy:
        class_path: tokenforge.fsdp.FullyShardedStrategy
        init_args: {activation_checkpointing: true}

What it does, per trainable network of a `tokenforge.training.TrainingModule` (``model``, and its ``ema`` copy,
sharded alike so the EMA update stays a shard-local lerp):

- each transformer block is its own FSDP unit, the network the root unit. The blocks are found from the network's
  ``block_types`` (the model class names its block class; nothing here knows a method), so a block's weights are
  gathered just before it runs and freed after (``reshard_after_forward``).
- ``activation_checkpointing``: every block recomputes its activations in the backward pass (``torch.distributed.
  _composable.checkpoint``, which keeps parameter names, so checkpoints are the same with it on or off).
- mixed precision follows ``trainer.precision``: with ``bf16-mixed`` the gathered weights are bf16, gradients are
  reduced in float32 and the sharded master weights and AdamW states stay float32; Lightning's autocast stays on
  around the step. ``mixed_precision: null`` turns the bf16 gathering off (``bf16-true`` casts the whole module,
  master weights included, as on one GPU).
- checkpoints are sharded (``torch.distributed.checkpoint``): ``last.ckpt`` is a folder with one file per rank
  and ``meta.pt`` (loop state, schedulers, RNG). Loading reshards, so a run saved on N processes resumes with
  ``--ckpt_path`` on any other number. `consolidate` turns such a folder into one ``.ckpt`` file that
  ``tokenforge generate`` / ``from_pretrained`` read.

Lightning's ``FSDPStrategy`` (FSDP1) refuses a CPU accelerator; this strategy runs on CPU over gloo too, which is
how the tests check it (two processes, tests/test_fsdp.py). Frozen helpers of a module (e.g. the VQ-VAE
quantizer a next-scale generator teacher-forces through) are not sharded: they stay whole on every process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry
from torch import nn

from tokenforge.errors import UsageError

MIXED_PRECISION = ("auto", "bf16", None)


class FullyShardedStrategy(ModelParallelStrategy):
    """FSDP2 over all processes, block by block; see the module docstring. On the command line:
    ``--trainer.strategy tokenforge_fsdp`` (registered with Lightning under that name, default arguments).

    ``mixed_precision``: ``"auto"`` (bf16 weights in compute when ``trainer.precision`` is bf16), ``"bf16"``
    (always) or None (float32). ``reshard_after_forward``: free each block's gathered weights after its forward
    (ZeRO-3; False keeps them for the backward pass, as ZeRO-2: faster, more memory).
    ``save_distributed_checkpoint``: sharded checkpoint folders (default) or one file gathered on rank 0.
    """

    strategy_name = "tokenforge_fsdp"

    def __init__(
        self,
        activation_checkpointing: bool = True,
        mixed_precision: str | None = "auto",
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
    ) -> None:
        if mixed_precision not in MIXED_PRECISION:
            raise UsageError(f"FullyShardedStrategy mixed_precision must be one of {MIXED_PRECISION}, got "
                             f"{mixed_precision!r}")
        # the process group backend follows the device (NCCL on GPUs, gloo on CPUs)
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint)
        self.activation_checkpointing = activation_checkpointing
        self.mixed_precision = mixed_precision
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process: one data-parallel group
        super().setup_environment()

    def param_dtype(self) -> torch.dtype | None:
        """The dtype blocks compute in (their gathered weights): bf16 or None (as stored, float32)."""
        if self.mixed_precision == "bf16":
            return torch.bfloat16
        precision = str(getattr(self.precision_plugin, "precision", ""))
        return torch.bfloat16 if self.mixed_precision == "auto" and precision.startswith("bf16") else None

    def shard(self, module: nn.Module) -> None:
        """Shard ``module``'s trainable networks (``model``, ``ema``) in place; called from its configure_model."""
        networks = [net for net in (getattr(module, "model", None), getattr(module, "ema", None)) if net is not None]
        if not networks:
            raise UsageError(f"FullyShardedStrategy shards a module's .model; {type(module).__name__} has none")
        for net in networks:
            shard_network(net, self.device_mesh["data_parallel"], self.param_dtype(),
                          self.activation_checkpointing, self.reshard_after_forward)


StrategyRegistry.register(FullyShardedStrategy.strategy_name, FullyShardedStrategy,
                          description="FSDP2 block by block (tokenforge.fsdp)", override=True)


def block_types(network: nn.Module) -> tuple[type[nn.Module], ...]:
    """The network's transformer block classes (its ``block_types``), the units FSDP and checkpointing use."""
    types = getattr(network, "block_types", None)
    if not types:
        raise UsageError(f"{type(network).__name__} names no transformer block class (block_types), so it cannot be "
                         "sharded block by block: train it with --trainer.strategy ddp")
    return tuple(types)


def shard_network(network: nn.Module, mesh: Any, param_dtype: torch.dtype | None = None,
                  activation_checkpointing: bool = True, reshard_after_forward: bool = True) -> nn.Module:
    """``fully_shard`` each block of ``network`` (after `checkpoint`-ing it when asked), then the network itself.

    Idempotent: a network already sharded is left as it is (Lightning calls configure_model for every stage).
    """
    from torch.distributed._composable import checkpoint
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if isinstance(network, FSDPModule):
        return network
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    types = block_types(network)
    blocks = [m for m in network.modules() if isinstance(m, types)]
    for block in blocks:
        if activation_checkpointing:
            checkpoint(block)
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(network, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return network


def shard_if_asked(module: nn.Module) -> None:
    """`TrainingModule.configure_model`: shard when the trainer's strategy is a `FullyShardedStrategy`."""
    trainer = getattr(module, "_trainer", None)
    strategy = getattr(trainer, "strategy", None)
    if isinstance(strategy, FullyShardedStrategy):
        strategy.shard(module)


def is_sharded_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint folder written by `FullyShardedStrategy` (``meta.pt`` beside the shard files)."""
    return Path(path).is_dir() and (Path(path) / "meta.pt").is_file()


def consolidate(folder: str | Path, out: str | Path) -> Path:
    """One Lightning ``.ckpt`` file (full weights, optimiser states, loop state) from a sharded checkpoint folder,
    read without any process group; ``from_pretrained(out)`` and ``tokenforge generate --model out`` read it."""
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    if not is_sharded_checkpoint(folder):
        raise UsageError(f"{folder}: not a sharded checkpoint folder (no meta.pt); give the folder that fit saved "
                         "with FullyShardedStrategy, e.g. .../checkpoints/last.ckpt")
    checkpoint = _load_distributed_checkpoint(Path(folder))  # state_dict, optimizer_0..n, and meta.pt's keys
    count = sum(1 for key in checkpoint if key.startswith("optimizer_") and key[len("optimizer_"):].isdigit())
    checkpoint["optimizer_states"] = [checkpoint.pop(f"optimizer_{i}") for i in range(count)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return out
