"""`tokenforge enat-generate`: ``tokenforge generate`` plus ENAT's sampler options.

    tokenforge enat-generate --generator CKPT|official:enat:PATH --tokenizer official:mage_vqgan:PATH \\
        --n 16 --classes 207 360 --cfg 2.5 --steps 8 --seed 0 --out samples/ [--no-reuse | --mode maskgit]

Every ``tokenforge generate`` option works (``--cfg`` is ENAT's guidance scale w, default 2.5 here;
``--temperature`` scales ``--samp-temp``); the options below are ENAT's own. Writes the same files
(``ids.npy``, ``labels.json``, ``sample_NNNN.png``, ``grid.png``).
"""

from __future__ import annotations

import argparse
import sys

from tokenforge.generators.autoregressive.generate import main as generate_main
from tokenforge.generators.enat import sampler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokenforge enat-generate", add_help=False, allow_abbrev=False)
    p.add_argument("--steps", type=int, default=8, help="sampling steps (8)")
    p.add_argument("--mask-temp", type=float, default=1.5, help="Gumbel re-masking temperature (1.5)")
    p.add_argument("--samp-temp", type=float, default=6.0, help="token sampling temperature at step 0 (6)")
    p.add_argument("--no-reuse", action="store_true", help="re-encode every visible token at every step")
    p.add_argument("--mode", choices=sampler.MODES, default="enat", help="enat | maskgit (compute baseline)")
    own, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if "-h" in rest or "--help" in rest:
        print(p.format_help().replace("usage: tokenforge enat-generate", "ENAT options of tokenforge enat-generate"))
    if own.steps < 1:
        print(f"tokenforge enat-generate: --steps must be >= 1 (got {own.steps})", file=sys.stderr)
        return 2
    if "--cfg" not in rest:
        rest = [*rest, "--cfg", "2.5"]
    saved = dict(sampler.CLI_DEFAULTS)
    sampler.CLI_DEFAULTS.update(steps=own.steps, mask_temp=own.mask_temp, samp_temp=own.samp_temp,
                                reuse=not own.no_reuse, mode=own.mode)
    try:
        return generate_main(rest, command="enat-generate")
    finally:
        sampler.CLI_DEFAULTS.clear()
        sampler.CLI_DEFAULTS.update(saved)


if __name__ == "__main__":
    sys.exit(main())
