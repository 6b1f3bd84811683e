"""`python -m skewtune` = the `skewtune` console script."""

from skewtune.cli import main

main()
