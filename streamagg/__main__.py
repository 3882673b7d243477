"""``python -m streamagg``."""

from .cli import main

main()
