#!/usr/bin/env python
"""Write the UTMOS TorchScript file that `tokenforge.metrics.utmos` reads, from a local SpeechMOS checkout.

    python tools/export_utmos.py --speechmos PATH/TO/SpeechMOS --out ~/.cache/tokenforge/weights/utmos.pt

``--speechmos`` is a clone of the SpeechMOS repository (tarepan/SpeechMOS, which reimplements UTMOS22 strong in
plain PyTorch); its ``hubconf.py`` builds ``utmos22_strong`` and loads the released weights through torch.hub's
cache (``$TORCH_HOME/hub/checkpoints``; put the file there on an offline machine). The predictor is traced at
16 kHz and checked on a second length (`tokenforge.metrics.utmos.export_torchscript`); the file's sha256 is
printed, and every UTMOS result records it.
"""

from __future__ import annotations

import argparse

import torch

from tokenforge.metrics.utmos import export_torchscript


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speechmos", required=True, help="local clone of the SpeechMOS repository")
    parser.add_argument("--model", default="utmos22_strong", help="its hubconf entry (default utmos22_strong)")
    parser.add_argument("--out", required=True,
                        help="TorchScript file to write (e.g. $TOKENFORGE_HOME/weights/utmos.pt)")
    args = parser.parse_args()
    predictor = torch.hub.load(args.speechmos, args.model, source="local", trust_repo=True)
    print(f"{args.out} sha256 {export_torchscript(predictor, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
