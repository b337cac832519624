"""``python -m unipar``: the same as the ``unipar`` command."""
import sys

from .cli import main

sys.exit(main())
