"""One way to train (issue 19, item 6): every Lightning module takes ``optimizer`` / ``lr_scheduler`` callables from
YAML, clips gradients through one function, and keeps its method's default recipe."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import nn

from tokenforge.config import Configurable
from tokenforge.config_models import build_model, build_training_module, config_files
from tokenforge.lr_schedulers import WarmupConstantLR, WarmupCosineLR
from tokenforge.methods import registry
from tokenforge.training import TrainingModule, clip_gradient_norm

ROOT = Path(__file__).resolve().parents[1]


def config_folder(package: str) -> Path:
    """``configs/<area>/<method>`` of a method package ``tokenforge.<area>.<method>``."""
    parts = package.split(".")
    return ROOT / "configs" / parts[1] / parts[2] if len(parts) == 3 and parts[0] == "tokenforge" else ROOT / "none"


def trainable_modules() -> dict[str, Path]:
    """Lightning module class path -> its first tiny config, over every registered method's config folder."""
    found: dict[str, Path] = {}
    for method in registry().values():
        for overlay in sorted(config_folder(method.package).glob("*tiny*.yaml")):
            files = config_files(overlay)
            model = {}
            for path in files:
                model = {**model, **((yaml.safe_load(path.read_text()) or {}).get("model") or {})}
            if "class_path" in model:
                found.setdefault(model["class_path"], overlay)
    return found


MODULES = trainable_modules()

YAML_CALLABLES = """
model:
  init_args:
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.01, eps: 1.0e-5, amsgrad: true}
    lr_scheduler:
      class_path: tokenforge.lr_schedulers.WarmupCosineLR
      init_args: {warmup_steps: 3}
"""


def first_optimizer_and_scheduler(configured: object) -> tuple[torch.optim.Optimizer, object]:
    """The (first) optimiser and its scheduler from any shape ``configure_optimizers`` returns."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None
    if isinstance(configured, dict):
        scheduler = configured.get("lr_scheduler")
        return configured["optimizer"], scheduler["scheduler"] if isinstance(scheduler, dict) else scheduler
    optimizers, schedulers = configured
    scheduler = schedulers[0] if schedulers else None
    return optimizers[0], scheduler["scheduler"] if isinstance(scheduler, dict) else scheduler


def cpu_trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_every_method_with_configs_is_covered() -> None:
    names = {path.parent.name for path in MODULES.values()}
    assert {"autoregressive", "ecar", "enat", "linfusion", "flextok", "vat"} <= names
    assert len(MODULES) >= 8  # the GAN tokenizers too


@pytest.mark.parametrize("class_path", sorted(MODULES), ids=lambda c: c.rsplit(".", 1)[-1])
def test_optimizer_and_scheduler_come_from_yaml(class_path: str, tmp_path: Path) -> None:
    overlay = tmp_path / "callables.yaml"
    overlay.write_text(YAML_CALLABLES)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # configs that still pass lr / warmup_steps directly
        module = build_training_module([*config_files(MODULES[class_path]), overlay])
    assert isinstance(module, TrainingModule)
    module.trainer = cpu_trainer(max_steps=77)
    optimizer, scheduler = first_optimizer_and_scheduler(module.configure_optimizers())
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["eps"] == 1e-5 and optimizer.defaults["amsgrad"] is True
    assert isinstance(scheduler, WarmupCosineLR) and scheduler.optimizer is optimizer
    # the run length came from trainer.max_steps (a GAN counts it in generator steps: fewer)
    assert scheduler.factor.total_steps == module.run_length() and 0 < module.run_length() <= 77


# ------------------------------------------------------------------ today's recipes are the defaults

def tiny_module(area: str, method: str, cls_name: str, overlay: str = "tiny.yaml", **kwargs: object) -> TrainingModule:
    """The method's Lightning module around the tiny config's inference model, every training argument default."""
    import importlib

    module_cls = getattr(importlib.import_module(f"tokenforge.{area}.{method}.module"), cls_name)
    return module_cls(build_model(ROOT / "configs" / area / method / overlay), **kwargs)


def groups_of(optimizer: torch.optim.Optimizer) -> list[tuple[set[int], float]]:
    return [({id(p) for p in g["params"]}, g["weight_decay"]) for g in optimizer.param_groups]


def ids(params: object) -> set[int]:
    return {id(p) for p in params}


def matrices_decay(params: list[nn.Parameter], wd: float, no_decay: set[int] = frozenset()) -> list:
    return [({id(p) for p in params if p.dim() >= 2 and id(p) not in no_decay}, wd),
            ({id(p) for p in params if p.dim() < 2 or id(p) in no_decay}, 0.0)]


def test_autoregressive_defaults_are_llamagen_var() -> None:
    module = tiny_module("generators", "autoregressive", "ARModule")
    module.trainer = cpu_trainer(max_steps=100)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.AdamW and configured["lr_scheduler"]["interval"] == "step"
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["betas"] == (0.9, 0.95)
    assert groups_of(optimizer) == matrices_decay(list(module.model.parameters()), 0.05)
    assert optimizer.defaults["fused"] is None  # fused only on CUDA without clipping
    assert isinstance(scheduler, WarmupCosineLR) and scheduler.factor.total_steps == 100
    assert scheduler.factor.warmup_steps == 0 and scheduler.factor.min_lr_ratio == 0.0
    assert scheduler.factor(50) == pytest.approx(0.5)  # half-way down the cosine to 0


def test_autoregressive_fuses_adamw_on_cuda_unless_clipping() -> None:
    """The policy only: the optimiser is asked for ``fused=True`` on CUDA when nothing clips (no GPU needed)."""
    asked: list[object] = []

    def adamw(params: object, fused: object = None, **kwargs: object) -> torch.optim.Optimizer:
        asked.append(fused)
        return torch.optim.AdamW(params, **kwargs)

    for clip, device in ((None, "cuda"), (1.0, "cuda"), (None, "cpu")):
        module = tiny_module("generators", "autoregressive", "ARModule", gradient_clip_val=clip,
                             optimizer=functools.partial(adamw, lr=1e-4, fused=None))
        module._device = torch.device(device, 0) if device == "cuda" else torch.device(device)  # as after .to()
        module.configure_optimizers()
    assert asked == [True, None, None]


def test_autoregressive_deprecated_arguments_still_set_the_recipe() -> None:
    with pytest.warns(DeprecationWarning, match="init_args"):
        module = tiny_module("generators", "autoregressive", "ARModule", lr=3e-3, weight_decay=0.1, betas=[0.8, 0.9],
                             warmup_steps=10, min_lr_ratio=0.1)
    module.trainer = cpu_trainer(max_steps=110)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert optimizer.defaults["betas"] == (0.8, 0.9) and optimizer.param_groups[0]["weight_decay"] == 0.1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 / 10)  # warm-up step 0: (0 + 1) / 10
    assert scheduler.factor(60) == pytest.approx(0.55) and scheduler.factor(500) == pytest.approx(0.1)
    constant = tiny_module("generators", "autoregressive", "ARModule", schedule="constant", warmup_steps=4)
    scheduler = constant.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, WarmupConstantLR) and scheduler.factor(3) == 1.0 and scheduler.factor(10**6) == 1.0


def test_ecar_defaults_keep_the_head_out_of_weight_decay() -> None:
    module = tiny_module("generators", "ecar", "ECARModule")
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["betas"] == (0.9, 0.95)
    head = ids((module.model.head if hasattr(module.model, "head") else module.model.diffloss).parameters())
    assert head and groups_of(optimizer) == matrices_decay(list(module.model.parameters()), 0.02, head)
    assert isinstance(scheduler, WarmupConstantLR) and scheduler.factor.warmup_steps == 0


def test_enat_defaults_decay_every_parameter_and_warm_up_5000_steps() -> None:
    module = tiny_module("generators", "enat", "ENATModule")
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert optimizer.defaults["lr"] == 4e-4 and optimizer.defaults["betas"] == (0.99, 0.99)
    assert groups_of(optimizer) == [(ids(module.model.parameters()), 0.03)]
    assert isinstance(scheduler, WarmupConstantLR) and scheduler.factor.warmup_steps == 5000
    assert scheduler.factor(0) == pytest.approx(1 / 5000) and scheduler.factor(5000) == 1.0


def test_linfusion_defaults_are_the_official_distillation() -> None:
    from tokenforge.generators.linfusion.module import LinFusionDistillModule

    spec = yaml.safe_load((ROOT / "configs/generators/linfusion/tiny.yaml").read_text())["model"]["init_args"]
    module = LinFusionDistillModule(tiny=spec["tiny"])
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW  # no schedule
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["betas"] == (0.9, 0.999)
    assert groups_of(optimizer) == [(ids(module.model.parameters()), 0.0)]
    assert ids(module.model.parameters()) == ids(p for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("method,cls_name", [("vat", "VATModule"), ("flextok", "FlexTokModule")])
def test_tokenizer_defaults_adamw_1e4_and_clip_1(method: str, cls_name: str) -> None:
    module = tiny_module("tokenizers", method, cls_name)
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW  # no schedule unless one is given
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["betas"] == (0.9, 0.999)
    assert groups_of(optimizer) == [(ids(module.model.parameters()), 0.01)]
    assert module.gradient_clip_val == 1.0


def test_vat_deprecated_schedule_picks_the_scheduler() -> None:
    module = tiny_module("tokenizers", "vat", "VATModule", schedule="cosine", warmup_steps=2)
    module.trainer = cpu_trainer(max_steps=12)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, WarmupCosineLR) and scheduler.factor.total_steps == 12
    assert scheduler.factor(1) == 1.0 and scheduler.factor(7) == pytest.approx(0.5) and scheduler.factor(12) == 0.0


# ------------------------------------------------------------------ one clipping function

class Recording(torch.optim.SGD):
    """SGD that notes the total gradient norm each step is asked to apply."""

    norms: list[float] = []

    def step(self, closure=None):  # noqa: ANN001, ANN201
        result = super().step(closure) if closure is None else None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        Recording.norms.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]
                                          if p.grad is not None]).norm().item())
        if closure is not None:
            super().step()
        return result


class Linear(Configurable, nn.Linear):
    """A Configurable layer, so a `TrainingModule` can own it."""


class Regression(TrainingModule):
    """Least squares with a steep loss (gradients far above the clip value); manual optimisation on request."""

    def __init__(self, manual: bool = False, **kwargs: object) -> None:
        super().__init__(Linear(8, 1), **kwargs)
        self.automatic_optimization = not manual
        self.returned: list[float] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = 100.0 * (self.model(batch) - 5.0).pow(2).mean()
        if self.automatic_optimization:
            return loss
        self.returned.append(float(self.clip_and_step(self.optimizers(), loss)))
        return loss.detach()


def fit(module: Regression, **trainer_kwargs: object) -> list[float]:
    Recording.norms = []
    data = torch.utils.data.DataLoader(torch.randn(12, 8), batch_size=4)
    cpu_trainer(max_steps=3, **trainer_kwargs).fit(module, data)
    assert len(Recording.norms) == 3
    return Recording.norms


SGD = functools.partial(Recording, lr=1e-4)


@pytest.mark.parametrize("where", ["module", "trainer"])
def test_automatic_optimisation_clips(where: str) -> None:
    module = Regression(optimizer=SGD, gradient_clip_val=0.5 if where == "module" else None)
    norms = fit(module, gradient_clip_val=0.5 if where == "trainer" else None)
    assert max(norms) <= 0.5 * (1 + 1e-4)
    assert min(fit(Regression(optimizer=SGD))) > 5.0  # unclipped, the gradients are far larger


def test_module_clip_value_wins_over_the_trainers() -> None:
    norms = fit(Regression(optimizer=SGD, gradient_clip_val=0.25), gradient_clip_val=4.0)
    assert max(norms) <= 0.25 * (1 + 1e-4)


def test_manual_optimisation_clips_and_returns_the_norm_before() -> None:
    module = Regression(manual=True, optimizer=SGD, gradient_clip_val=0.5)
    norms = fit(module)
    assert max(norms) <= 0.5 * (1 + 1e-4)
    assert min(module.returned) > 5.0  # what clip_and_step returns: the norm before clipping


def test_clip_gradient_norm_measures_without_a_limit() -> None:
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)
    assert float(clip_gradient_norm([p], None)) == pytest.approx(6.0) and torch.equal(p.grad, torch.full((4,), 3.0))
    assert float(clip_gradient_norm([p], 1.5)) == pytest.approx(6.0)
    assert float(p.grad.norm()) == pytest.approx(1.5, rel=1e-4)
    assert float(clip_gradient_norm([nn.Parameter(torch.zeros(2))], 1.0)) == 0.0  # no gradient at all
