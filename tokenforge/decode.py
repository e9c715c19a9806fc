"""`tokenforge decode`: codes files (from `tokenforge encode`) -> images (PNG), audio (FLAC) or meshes (PLY).

    tokenforge decode --model DIR|CKPT|NAME codes/ --out decoded/
    tokenforge decode --model DIR codes/ --out decoded/ --output-rate source   # audio at each input's own rate

``--model`` must be the model that encoded them: a codes file records its model's fingerprint
(`tokenforge.codes_file`) and another model's codes are refused with one line. Options and batching:
`tokenforge.tokenizer_verbs`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from tokenforge.tokenizer_verbs import main as run_verb

    return run_verb("decode", list(sys.argv[1:] if argv is None else argv))
