"""Workload 9: LlamaGen GPT-B training loop (data loader + forward + backward + clipping + AdamW), official vs ours.

Setting: GPT-B c2i (111 M, random weights, the official training defaults: residual / FFN / token dropout 0.1,
class dropout 0.1), batch 64 x 256 tokens of a 16384-code tokenizer, bf16 autocast, gradient clipping 1.0,
AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.05 on matrices; both sides compiled (``torch.compile``, the
official default) and eager. Token data are random ids written on the fly in each side's own format, read by
each side's own loader with ``--workers`` workers and pinned memory. Timed: the ``--repeats`` steps after
``--warmup`` steps, as one window (``cuda.synchronize`` at both ends: the loader's waits count); tokens/s =
steps x 64 x 256 / window. Peak memory over the window.

Official (autoregressive/train/train_c2i.py, one GPU): ``.npy`` code and label files as
autoregressive/extract_codes_c2i.py writes them, read by ``dataset.build.build_dataset`` (``imagenet_code``,
`CustomDataset`); ``creat_optimizer`` (fused AdamW, decay / no-decay groups); its loop verbatim: ``non_blocking``
copies, autocast, ``GradScaler`` (disabled for bf16), ``clip_grad_norm_``, step, ``zero_grad(set_to_none)``,
``loss.item()`` per step. Deviations, all launch-neutral: no DDP (one process, no process group; ``shuffle=True``
replaces the ``DistributedSampler``), no EMA (off by default), no logging/checkpoints, and `CustomDataset`'s
hard-coded file list (1,281,167 ImageNet names, a TODO in the source) is replaced by the files written here.
Ours: ``tokenforge fit``'s path: configs/generators/autoregressive/gpt_b.yaml (`ARModule`, ``compile: true``)
trained by a Lightning Trainer (bf16-mixed, gradient_clip_val 1.0) on token shards (``ids.npy`` + ``cls``,
`ShardDataModule`, modality tokens); variants ``eager``, ``compile`` and ``compile_fused`` (fused AdamW, as the
official optimiser). ``--tiny`` (CPU smoke): configs/generators/autoregressive/tiny.yaml's sizes on both sides.
"""

from __future__ import annotations

import time
import types

import common

VARIANTS = {"eager": {"compile": False}, "compile": {"compile": True},
            "compile_fused": {"compile": True, "optimizer": {"init_args": {"fused": True}}}}


def main() -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="default 64 (tiny: 4)")
    p.add_argument("--workers", type=int, default=None, help="loader workers, default 8 (tiny: 0)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None,
                   help="ours' variants (official: eager and compile); default eager compile compile_fused on CUDA, "
                        "eager on CPU")
    args = p.parse_args()
    if "official" in args.impl:
        common.use_official("LlamaGen")
    common.use_ours()
    import logging
    import tempfile
    from pathlib import Path

    import lightning.pytorch as pl
    import numpy as np
    import torch
    import webdataset as wds
    from tokenforge.config_models import build_training_module, compose
    from tokenforge.data.datamodule import ShardDataModule
    from tokenforge.data.shards import npy_bytes

    bench = common.Bench(args, "llamagen_train_loop", warmup=5, repeats=20)
    device = bench.device
    batch = args.batch or (4 if args.tiny else 64)
    workers = args.workers if args.workers is not None else (0 if args.tiny else 8)
    variants = args.variants or (["eager", "compile", "compile_fused"] if bench.cuda else ["eager"])
    folder = common.PROJ / "configs" / "generators" / "autoregressive"
    configs = [folder / "base.yaml", folder / ("tiny.yaml" if args.tiny else "gpt_b.yaml")]
    gpt = compose(configs)["model"]["init_args"]["model"]["init_args"]
    seq, vocab, classes = gpt["seq_len"], gpt["vocab_size"], gpt["num_classes"]
    side = int(seq ** 0.5)
    precision, dtype = ("bf16-mixed", "bf16 autocast") if bench.cuda else ("32-true", "fp32")
    steps = bench.warmup + bench.repeats
    samples = batch * (steps + 2)
    work = Path(tempfile.mkdtemp(prefix="llamagen_train_loop_"))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, vocab, (samples, side, side))
    labels = rng.integers(0, classes, samples)
    tokens_per_step = batch * seq

    def emit(impl: str, variant: str, window: float, peak: float | None, params: float, loss: float) -> None:
        bench.emit(impl, batch, dtype, "tokens_per_s", bench.repeats * tokens_per_step / window, "tokens/s", peak,
                   variant=variant, seconds=window / bench.repeats, steps_per_s=round(bench.repeats / window, 3),
                   repeats=bench.repeats, workers=workers, params_M=params, last_loss=round(loss, 4),
                   what="loader + forward + backward + clip + AdamW step")

    def run_official(compiled: bool) -> None:
        from autoregressive.models.gpt import GPT_models, ModelArgs, Transformer
        from autoregressive.train.train_c2i import creat_optimizer
        from dataset.build import build_dataset

        code_path = work / "official"
        feature_dir, label_dir = code_path / "imagenet256_codes", code_path / "imagenet256_labels"
        if not feature_dir.is_dir():  # extract_codes_c2i.py's files: codes (1, h*w) int64, label (1,) int64
            feature_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            for i in range(samples):
                np.save(feature_dir / f"{i}.npy", codes[i].reshape(1, -1))
                np.save(label_dir / f"{i}.npy", labels[i : i + 1])
        dataset = build_dataset(types.SimpleNamespace(dataset="imagenet_code", code_path=str(code_path),
                                                      image_size=256))
        dataset.feature_files = dataset.label_files = [f"{i}.npy" for i in range(samples)]
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                             pin_memory=bench.cuda, drop_last=True)
        train_args = dict(resid_dropout_p=0.1, ffn_dropout_p=0.1, token_dropout_p=0.1, drop_path_rate=0.0)
        torch.manual_seed(0)
        if args.tiny:
            model = Transformer(ModelArgs(dim=gpt["dim"], n_layer=gpt["depth"], n_head=gpt["num_heads"],
                                          vocab_size=vocab, block_size=seq, num_classes=classes,
                                          multiple_of=gpt.get("multiple_of", 256), cls_token_num=1,
                                          model_type="c2i", **train_args)).to(device)
        else:
            model = GPT_models["GPT-B"](vocab_size=vocab, block_size=seq, num_classes=classes, cls_token_num=1,
                                        model_type="c2i", **train_args).to(device)
        params = common.params_m(model)
        optimizer = creat_optimizer(model, 0.05, 1e-4, (0.9, 0.95), logging.getLogger("official"))
        if compiled:
            model = torch.compile(model)
        model.train()
        ptdtype = torch.bfloat16 if bench.cuda else torch.float32
        scaler = torch.amp.GradScaler(device.type, enabled=False)  # mixed_precision bf16: no scaling
        running_loss, done, start = 0.0, 0, 0.0
        while done < steps:
            for x, y in loader:
                if done == bench.warmup:
                    bench.sync()
                    if bench.cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    start = time.perf_counter()
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                z_indices = x.reshape(x.shape[0], -1)
                c_indices = y.reshape(-1)
                with torch.autocast(device.type, dtype=ptdtype, enabled=bench.cuda):
                    _, loss = model(cond_idx=c_indices, idx=z_indices[:, :-1], targets=z_indices)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                running_loss += loss.item()
                done += 1
                if done == steps:
                    break
        bench.sync()
        window = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if bench.cuda else None
        emit("official", "compile" if compiled else "eager", window, peak, params, float(loss.item()))

    class Window(pl.Callback):
        """The window from the end of the last warm-up step to the end of the last step (synchronised)."""

        def __init__(self) -> None:
            self.start = self.end = 0.0
            self.loss = float("nan")

        def on_train_start(self, trainer, module) -> None:
            if bench.warmup == 0:  # no warm-up: the window opens before the first batch is fetched
                bench.sync()
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, data, batch_idx) -> None:
            if batch_idx == bench.warmup - 1 or batch_idx == steps - 1:
                bench.sync()
                if batch_idx == bench.warmup - 1:
                    if bench.cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    self.start = time.perf_counter()
                else:
                    self.end = time.perf_counter()
                    loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                    self.loss = float(loss.detach().float())

    def run_ours(variant: str) -> None:
        shards = work / "ours"
        if not shards.is_dir():
            shards.mkdir(parents=True)
            with wds.ShardWriter(str(shards / "train-%06d.tar"), maxcount=max(1, samples // 8), verbose=0) as sink:
                for i in range(samples):
                    sink.write({"__key__": f"{i:06d}", "ids.npy": npy_bytes(codes[i].astype(np.int16)),
                                "cls": str(int(labels[i])).encode()})
        torch.manual_seed(0)
        module = build_training_module(configs, VARIANTS[variant])
        params = common.params_m(module.model)
        data = ShardDataModule(str(shards), modality="tokens", batch_size=batch, num_workers=workers,
                               epoch_samples=batch * steps, shuffle_buffer=256, pin_memory=bench.cuda)
        window = Window()
        trainer = pl.Trainer(accelerator=device.type, devices=1, precision=precision, max_steps=steps,
                             gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, default_root_dir=str(work), callbacks=[window])
        trainer.fit(module, datamodule=data)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if bench.cuda else None
        emit("ours", variant, window.end - window.start, peak, params, window.loss)

    row = dict(batch=batch, dtype=dtype, metric="tokens_per_s", unit="tokens/s")
    plan = [("official", v) for v in ("eager", "compile") if v == "eager" or bench.cuda] + \
           [("ours", v) for v in variants]
    for impl, variant in plan:
        if bench.wants(impl):
            bench.cleanup(reset_dynamo=True)
            run = (lambda v=variant: run_official(v == "compile")) if impl == "official" else \
                  (lambda v=variant: run_ours(v))
            bench.attempt(f"{impl} {variant}", run, impl=impl, variant=variant, **row)
    return 1 if bench.failures and args.tiny else 0


if __name__ == "__main__":
    raise SystemExit(main())
