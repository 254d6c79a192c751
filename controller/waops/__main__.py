"""`python -m waops` is the `waops` command (useful where the console script is not on PATH)."""

from waops.cli import main

main()
