"""`python -m tokenforge` is the `tokenforge` console script."""

from tokenforge.cli import main

if __name__ == "__main__":
    main()
