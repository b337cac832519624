"""``python -m unipar.native.head``: the head of a ``unipar start`` cluster."""
from .daemon import main

main()
