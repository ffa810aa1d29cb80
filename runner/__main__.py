"""`python -m runner` is the `runner` console script."""

from runner.cli import main

main()
