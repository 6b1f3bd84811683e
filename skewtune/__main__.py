"""`python -m skewtune` = the `skewtune` console script."""

from skewtune.command import main

main()
