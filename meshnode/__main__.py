"""`python -m meshnode`: the same as the `meshnode` console script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
