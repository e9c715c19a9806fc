#!/usr/bin/env python
"""Make raw webdataset shards: ``python tools/make_shards.py {images,audio,meshes} SRC OUT [options]``.

The same program as ``tokenforge shards make ...`` (see `tokenforge.data.cli`).
"""

import sys

from tokenforge.data.cli import main

if __name__ == "__main__":
    sys.exit(main(["make", *sys.argv[1:]]))
