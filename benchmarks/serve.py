"""`python -m benchmarks.serve {uvicorn,granian} <server args>`: a server, descriptor limit raised.

A launcher rather than `ulimit -n` in a shell, so the server's PID is the one the runner
started (CPU and RSS are read from /proc/<pid>) and no shell sits in between. granian runs
its worker in a child process; the runner measures that one (see targets.py).
"""

import sys

from .limits import raise_nofile


def main() -> None:
    raise_nofile()
    server, args = sys.argv[1], sys.argv[2:]
    sys.argv = [server, *args]
    if server == "granian":
        from granian.cli import entrypoint

        entrypoint()
    else:
        import uvicorn.main

        uvicorn.main.main()


if __name__ == "__main__":
    main()
