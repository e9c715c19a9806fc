#!/usr/bin/env python
"""Encode raw shards into token shards: ``python tools/encode_shards.py --tokenizer DIR IN OUT [options]``.

The same program as ``tokenforge shards encode ...`` (see `tokenforge.data.cli`).
"""

import sys

from tokenforge.data.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
