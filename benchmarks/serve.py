"""`python -m benchmarks.serve <uvicorn args>`: uvicorn with the descriptor limit raised.

A launcher rather than `ulimit -n` in a shell, so the server's PID is the one the runner
started (CPU and RSS are read from /proc/<pid>) and no shell sits in between.
"""

import sys

import uvicorn.main

from .limits import raise_nofile


def main() -> None:
    raise_nofile()
    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main.main()


if __name__ == "__main__":
    main()
