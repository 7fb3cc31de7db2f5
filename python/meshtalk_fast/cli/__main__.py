"""``python -m meshtalk_fast.cli ...`` (e.g. under torchrun) runs the ``meshtalk-fast`` command."""
import sys

from .command import main

sys.exit(main())
