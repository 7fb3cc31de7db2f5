"""The ``meshtalk-fast`` command: argument parsing only (``main``); the work is done by the layers below."""
from .command import main

__all__ = ["main"]
