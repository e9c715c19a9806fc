"""`python -m tokenforge` is the `tokenforge` console script."""

import sys

from tokenforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
