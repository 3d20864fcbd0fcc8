"""`python -m rgal`."""

from .cli import run

run()
