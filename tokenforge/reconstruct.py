"""`tokenforge reconstruct`: files -> tokens -> files with any tokenizer, and ``metrics.json``.

    tokenforge reconstruct --model DIR|CKPT|NAME photo.jpg other.png --out rec/ [--size 256]
    tokenforge reconstruct --model DIR speech.flac --out rec/
    tokenforge reconstruct --official NAME --model RELEASE_FILE inputs/ --out rec/ [--trust-pickle]

Images: each ``<stem>.png`` shows the input (centre crop) beside its reconstruction, plus ``grid.png``; audio:
``<stem>.flac`` at the tokenizer's rate, or the input's with ``--output-rate source`` (and its channel count with
``--output-channels source``; `tokenforge.audio_rates`); meshes: ``<stem>.ply``. ``metrics.json`` holds PSNR (images), the audio
metrics or the mesh's facts per file, the token count and the means; for audio also the rate each metric is
computed at (``metric_rates``) and, with ``--dnsmos`` / ``--utmos-weights``, DNSMOS and UTMOS with their package
versions and weight hashes. A method with outputs of its own (e.g.
coarse-to-fine strips, per-scale tables) declares a reconstruct hook and adds its options
(`tokenforge.methods`); they show in ``tokenforge reconstruct --model M --help``. The whole contract, batching,
skipping (exit 3) and the exact match with ``encode`` + ``decode``: `tokenforge.tokenizer_verbs`.
"""

from __future__ import annotations

import sys

from tokenforge.image_files import (  # noqa: F401  (re-exported: the image helpers' former home)
    IMAGE_SUFFIXES,
    UnreadableInput,
    image_files,
    load_image,
    load_images,
    psnr,
    to_uint8,
)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


def main(argv: list[str] | None = None) -> int:
    from tokenforge.tokenizer_verbs import main as run_verb

    return run_verb("reconstruct", list(sys.argv[1:] if argv is None else argv))
