"""The published weight and reference-statistics files the image metrics use, with their sha256.

Each is a `tokenforge.metrics.weights.WeightFile`: `locate` finds it by path or under ``$TOKENFORGE_HOME/weights/``
and checks the hash. Where each hash comes from (docs/metrics.md repeats it):
- FID Inception: pytorch-fid's release file ``pt_inception-2015-12-05-6726825d.pth`` (95,628,359 bytes); the
  file name carries the first 8 hex digits of its sha256, the full hash is the one published for it and for
  torch-fidelity's copy ``weights-inception-2015-12-05-6726825d.pth`` (the same file under another name).
- LPIPS VGG16 trunk: torchvision's ``vgg16-397923af.pth`` (name prefix = sha256 prefix, full hash as published).
- LPIPS linear heads: ``weights/v0.1/vgg.pth`` of the ``lpips`` package (0.1.4), hashed here from the wheel.
- ADM reference batch: the guided-diffusion evaluator's ``VIRTUAL_imagenet256_labeled.npz``; no published hash,
  so any file is accepted and the result records the hash it had.
"""

from __future__ import annotations

from tokenforge.metrics.weights import WeightFile

FID_INCEPTION = WeightFile(
    name="fid-inception-2015-12-05",
    file="pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    source="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
           "pt_inception-2015-12-05-6726825d.pth",
)

LPIPS_VGG16_TRUNK = WeightFile(
    name="lpips-vgg16-trunk",
    file="vgg16-397923af.pth",
    sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    source="https://download.pytorch.org/models/vgg16-397923af.pth",
)

LPIPS_VGG_HEADS = WeightFile(
    name="lpips-vgg-v0.1-heads",
    file="vgg.pth",
    sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    source="pip package lpips==0.1.4, lpips/weights/v0.1/vgg.pth",
)

ADM_IMAGENET256_REFERENCE = WeightFile(
    name="adm-imagenet256-reference",
    file="VIRTUAL_imagenet256_labeled.npz",
    sha256=None,
    source="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
           "VIRTUAL_imagenet256_labeled.npz",
)

IMAGE_METRIC_FILES = (FID_INCEPTION, LPIPS_VGG16_TRUNK, LPIPS_VGG_HEADS, ADM_IMAGENET256_REFERENCE)
