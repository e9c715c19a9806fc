"""TrainingModule's shared EMA: updated after each batch, used for evaluation, exported by checkpoints."""

from __future__ import annotations

import torch

from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.module import ARModule
from tokenforge.hub import from_pretrained


def test_ema_updates_and_is_what_checkpoints_export(tmp_path):
    torch.manual_seed(0)
    gpt = GPT(vocab_size=16, seq_len=4, layout="sequence", dim=32, depth=1, num_heads=2, multiple_of=32,
              num_classes=2)
    module = ARModule(gpt, ema_decay=0.5)
    assert module.eval_model is module.ema and not any(p.requires_grad for p in module.ema.parameters())
    start = next(module.ema.parameters()).clone()
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)
    assert torch.allclose(next(module.ema.parameters()), start + 0.5)  # halfway to the live weights

    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["tokenforge"]["prefix"] == "ema."
    torch.save(checkpoint, tmp_path / "last.ckpt")
    restored = from_pretrained(tmp_path / "last.ckpt")
    for a, b in zip(restored.parameters(), module.ema.parameters()):
        assert torch.equal(a, b)

    plain = ARModule(gpt, ema_decay=0)
    checkpoint = {"state_dict": plain.state_dict()}
    plain.on_save_checkpoint(checkpoint)
    assert plain.ema is None and plain.eval_model is gpt and checkpoint["tokenforge"]["prefix"] == "model."
