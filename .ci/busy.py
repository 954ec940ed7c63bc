"""One CPU-bound loop for `make test-busy`, which runs the test suite beside two of these.

It keeps a core busy until its parent (the recipe's shell, which stops it with a trap) is gone:
a shell killed outright (SIGKILL) cannot run its trap, and the loop must not outlive it.
"""

from __future__ import annotations

import os

parent = os.getppid()
while os.getppid() == parent:
    for _ in range(100_000):
        pass
