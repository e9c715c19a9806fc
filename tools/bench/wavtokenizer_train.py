"""Workload 8: WavTokenizer training step (discriminator + generator phases), official vs tokenforge, one process.

Setting: the released 75 tokens/s size (official configs/wavtokenizer_smalldata_frame75_3s_nq1_code4096_dim512_
kmeans200_attn.yaml: SEANet 512/32, VQ 4096 x 512, Vocos 768/2304/12, n_fft 1280, hop 320; MPD + MRD with 4
bandwidth embeddings + DAC discriminators at the official widths), random weights, batch 16 x 2 s crops
(48,000 samples at 24 kHz, random audio: speed does not depend on content), bf16-mixed, GAN from the first
batch (pretrain_mel_steps 0), AdamW for both networks. Each side runs inside a Lightning Trainer (same precision
plugin, same in-memory loader); each batch is timed with ``cuda.synchronize`` at its start and end (median of
``--repeats`` after ``--warmup`` batches); peak memory over the timed batches. Metric: crops per second.

Official: ``decoder.experiment.WavTokenizer`` (codebook filled and marked initialised, as after its k-means),
stepped as PyTorch Lightning 1.x's automatic optimisation stepped it with two optimisers: per batch, for
``optimizer_idx`` 0 (discriminators) then 1 (generator): toggle the optimiser (the other optimiser's parameters
stop requiring grad), ``training_step(batch, batch_idx, optimizer_idx)`` (its own ``bandwidth_id`` draw, its
discriminator phase reruns the generator under ``no_grad``, real and generated audio in separate discriminator
calls), zero_grad, backward, step; then both cosine schedulers step. Its ``configure_optimizers`` builds the
optimisers. Its ``self.log`` calls find no trainer and return (it is not attached to one); ``global_step`` is
the batch index + 1, so its every-1000-steps audio logging does not fire.
Ours: `WavTokenizerModule` from configs/tokenizers/wavtokenizer/short_75.yaml (the small_75 model; GAN from
batch 0, no ramp; its AdamW settings), trained by its own ``training_step`` (`GANModule`); variants
``eager``, ``compile`` (the module's ``compile: true``) and ``compile_fused`` (plus fused AdamW); when
``compile`` fails, ``compile_convs`` / ``compile_convs_fused`` (``compile_parts``: encoder, backbone, MPD) instead.
``--tiny`` (CPU smoke): 0.4 s crops, batch 2, a narrow Vocos on both sides, ours tiny.yaml; fp32.
"""

from __future__ import annotations

import statistics
import sys
import time
import types

import common

OFFICIAL_CONFIG = "configs/wavtokenizer_smalldata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml"
FUSED = {"optimizer": {"init_args": {"fused": True}}, "disc_optimizer": {"init_args": {"fused": True}}}
CONVS = {"compile": True, "compile_parts": ["encoder", "backbone", "mpd"]}  # no FFT inside (module docstring)
VARIANTS = {"eager": {}, "compile": {"compile": True}, "compile_fused": {"compile": True, **FUSED},
            "compile_convs": CONVS, "compile_convs_fused": {**CONVS, **FUSED}}


def lightning_1x_imports() -> None:
    """The official experiment imports ``pytorch_lightning`` (1.x API; only its LightningModule / Callback
    classes are used here) and, through ``decoder.helpers``, matplotlib (plots for its loggers, never called
    here). A host without them gets ``lightning.pytorch`` under the old name and a ``decoder.helpers`` whose
    plotting function raises if ever called."""
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        import lightning.pytorch as pl

        sys.modules["pytorch_lightning"] = pl
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        helpers = types.ModuleType("decoder.helpers")

        def plot_spectrogram_to_numpy(*args, **kwargs):
            raise RuntimeError("matplotlib is not installed: the official audio/image logging cannot plot")

        helpers.plot_spectrogram_to_numpy = plot_spectrogram_to_numpy
        sys.modules["decoder.helpers"] = helpers


def main() -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="crops per batch, default 16 (tiny: 2)")
    p.add_argument("--seconds", type=float, default=None, help="crop length, default 2 (tiny: 0.4)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None,
                   help="ours' variants; default eager compile compile_fused on CUDA, eager on CPU")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode of ours' compile variants")
    p.add_argument("--compile-backend", default=None, help="e.g. aot_eager: a quick CPU check of the compile path")
    args = p.parse_args()
    if "official" in args.impl:
        root = common.use_official("WavTokenizer")
        lightning_1x_imports()
    common.use_ours()
    import tempfile

    import lightning.pytorch as pl
    import torch
    import yaml
    from tokenforge.config_models import build_training_module

    bench = common.Bench(args, "wavtokenizer_train", warmup=3, repeats=10)
    device = bench.device
    batch = args.batch or (2 if args.tiny else 16)
    hop = 320  # crops are whole frames: the official generator returns frames x hop samples
    crop = max(1, round((args.seconds or (0.4 if args.tiny else 2.0)) * 24000 / hop)) * hop
    seconds = crop / 24000
    variants = args.variants or (["eager", "compile", "compile_fused"] if bench.cuda else ["eager"])
    precision = "bf16-mixed" if bench.cuda else "32-true"
    dtype = "bf16 autocast" if bench.cuda else "fp32"
    n = bench.warmup + bench.repeats
    torch.manual_seed(0)
    batches = [(torch.rand(batch, crop) * 2 - 1) * 0.5 for _ in range(n)]
    workdir = tempfile.mkdtemp(prefix="wavtokenizer_train_")

    class StepTimer(pl.Callback):
        """Seconds of each batch after the warm-up (synchronised at its start and end), the first batch's
        generator loss, the peak memory of the timed batches."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.first_loss: float | None = None
            self.start = 0.0

        def on_train_batch_start(self, trainer, module, data, batch_idx) -> None:
            bench.sync()
            if batch_idx == bench.warmup and bench.cuda:
                torch.cuda.reset_peak_memory_stats(device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, data, batch_idx) -> None:
            bench.sync()
            if batch_idx >= bench.warmup:
                self.times.append(time.perf_counter() - self.start)
            if batch_idx == 0 and isinstance(outputs, dict) and "loss" in outputs:
                self.first_loss = float(outputs["loss"].detach().float())

    def fit(module: pl.LightningModule, wrap) -> StepTimer:
        timer = StepTimer()
        trainer = pl.Trainer(accelerator=device.type, devices=1, precision=precision, max_epochs=1,
                             limit_train_batches=n, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, default_root_dir=workdir, callbacks=[timer])
        loader = torch.utils.data.DataLoader([wrap(x) for x in batches], batch_size=None, pin_memory=bench.cuda)
        trainer.fit(module, train_dataloaders=loader)
        return timer

    def emit(impl: str, variant: str, timer: StepTimer, params: float) -> None:
        secs = statistics.median(timer.times)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if bench.cuda else None
        bench.emit(impl, batch, dtype, "crops_per_s", batch / secs, "crops/s", peak, variant=variant,
                   seconds=secs, ms=round(secs * 1e3, 2), crop_s=seconds,
                   audio_s_per_s=round(batch * seconds / secs, 2), repeats=len(timer.times), params_M=params,
                   first_loss_g=timer.first_loss,
                   what="one batch: discriminator step + generator step (forwards, backwards, AdamW)")

    def run_official() -> None:
        from decoder.experiment import WavTokenizer as OfficialExperiment
        from decoder.feature_extractors import EncodecFeatures
        from decoder.heads import ISTFTHead
        from decoder.models import VocosBackbone

        cfg = yaml.safe_load((root / OFFICIAL_CONFIG).read_text())["model"]["init_args"]
        backbone, head = dict(cfg["backbone"]["init_args"]), dict(cfg["head"]["init_args"])
        if args.tiny:
            backbone.update(dim=64, intermediate_dim=128, num_layers=1)
            head.update(dim=64)

        class Official(OfficialExperiment):
            """The official module with the two trainer facts it reads outside Lightning's loop."""
            bench_step = 1

            @property
            def global_step(self) -> int:  # official: trainer.fit_loop.epoch_loop.total_batch_idx
                return self.bench_step

            @property
            def trainer(self):  # configure_optimizers reads trainer.max_steps (cosine over max_steps // 2)
                return types.SimpleNamespace(max_steps=2 * n)

        torch.manual_seed(0)
        official = Official(EncodecFeatures(**cfg["feature_extractor"]["init_args"]), VocosBackbone(**backbone),
                            ISTFTHead(**head), resume_config="", resume_model="",
                            sample_rate=int(cfg["sample_rate"]),  # YAML 1.1 reads "2e-4" as a string;
                            initial_learning_rate=float(cfg["initial_learning_rate"]),  # LightningCLI casts
                            mel_loss_coeff=float(cfg["mel_loss_coeff"]), mrd_loss_coeff=float(cfg["mrd_loss_coeff"]),
                            pretrain_mel_steps=0)
        for module in official.modules():  # random codebook marked initialised (no k-means on batch 0)
            if hasattr(module, "embed") and hasattr(module, "inited"):
                module.embed.normal_()
                module.embed_avg.copy_(module.embed)
                module.inited.fill_(1)
        official.train_discriminator = True  # what its on_train_batch_start sets once global_step >= 0
        official = official.to(device).train()
        params = common.params_m(official)

        class OfficialLoop(pl.LightningModule):
            """PyTorch Lightning 1.x's automatic optimisation of the official module (module docstring). The
            official module is held outside the module tree, so Lightning never attaches a trainer to it."""

            def __init__(self) -> None:
                super().__init__()
                self.automatic_optimization = False
                self.official = (official,)

            def configure_optimizers(self):
                return official.configure_optimizers()  # ([opt_disc, opt_gen], [cosine, cosine])

            def training_step(self, audio, batch_idx):
                official.bench_step = batch_idx + 1
                losses = []
                for idx, opt in enumerate(self.optimizers()):
                    with self.toggled_optimizer(opt):
                        loss = official.training_step(audio, batch_idx, idx)
                        opt.zero_grad()
                        self.manual_backward(loss)
                        opt.step()
                    losses.append(loss.detach())
                for scheduler in self.lr_schedulers():
                    scheduler.step()
                return {"loss": losses[1]}

        timer = fit(OfficialLoop(), lambda x: x)
        emit("official", "eager", timer, params)
        official.to("cpu")

    def run_ours(variant: str) -> None:
        overlay = "tiny.yaml" if args.tiny else "short_75.yaml"
        folder = common.PROJ / "configs" / "tokenizers" / "wavtokenizer"
        configs = [folder / "base.yaml", folder / overlay]
        overrides = {"pretrain_mel_steps": 0, "gan_ramp_steps": 0, "evaluate_pesq": False, **VARIANTS[variant]}
        options = {"mode": args.compile_mode, "backend": args.compile_backend}
        if "compile" in overrides and any(options.values()):
            overrides["compile_options"] = {k: v for k, v in options.items() if v}
        torch.manual_seed(0)
        module = build_training_module(configs, overrides)
        params = common.params_m(module.model)
        timer = fit(module, lambda x: {"audio": x})
        emit("ours", variant, timer, params)

    row = dict(batch=batch, dtype=dtype, metric="crops_per_s", unit="crops/s")
    if bench.wants("official"):
        bench.attempt("official eager", run_official, impl="official", variant="eager", **row)
    if bench.wants("ours"):
        queue = list(variants)
        while queue:
            variant = queue.pop(0)
            bench.cleanup(reset_dynamo=True)
            failures = bench.failures
            bench.attempt(f"ours {variant}", lambda: run_ours(variant), impl="ours", variant=variant, **row)
            if variant == "compile" and bench.failures > failures and args.variants is None:
                # all parts failed to compile (e.g. an FFT backward): measure the FFT-free parts instead
                queue = ["compile_convs"] + [v.replace("compile", "compile_convs") for v in queue]
    return 1 if bench.failures and args.tiny else 0


if __name__ == "__main__":
    raise SystemExit(main())
