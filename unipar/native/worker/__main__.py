"""``python -m unipar.native.worker``: one worker process, the secret on stdin."""
from .process import main

main()
