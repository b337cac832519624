"""``python -m unipar.native.node``: a node daemon (usually started through ``boot.py``)."""
from .daemon import main

main()
