"""``python -m cli``: the command line."""

from cli import main

main()
