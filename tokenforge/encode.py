"""`tokenforge encode`: files -> one codes file each (``<stem>.codes.npz``, `tokenforge.codes_file`), for any
tokenizer (images, audio, meshes).

    tokenforge encode --model DIR|CKPT|NAME photos/ --out codes/ [--size 256]
    tokenforge encode --official NAME --model RELEASE_FILE speech.flac --out codes/

`tokenforge decode` turns the codes back into files; options, batching and skipping: `tokenforge.tokenizer_verbs`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from tokenforge.tokenizer_verbs import main as run_verb

    return run_verb("encode", list(sys.argv[1:] if argv is None else argv))
