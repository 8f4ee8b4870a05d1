"""`python -m moot.cli`: the same command as the `moot` console script."""

from moot.cli import main

main()
