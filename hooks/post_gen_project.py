"""Remove what the answers did not choose, so a baked project carries no dead files."""

from __future__ import annotations

import sys
from pathlib import Path

BROKER = "{{ cookiecutter.broker }}"
PACKAGE = Path("src") / "{{ cookiecutter.project_slug }}"

# Files that belong to one broker only; the other broker's bake deletes them.
ONLY_FOR = {
    "memory": [
        PACKAGE / "broker" / "memory.py",
        Path("tests") / "test_broker_memory.py",
    ],
    "redis": [
        PACKAGE / "broker" / "redis.py",
        PACKAGE / "broker" / "redis_live.py",
        PACKAGE / "broker" / "redis_sentinel.py",
        PACKAGE / "broker" / "redis_cluster.py",
        PACKAGE / "broker" / "singleflight.py",
        Path("tests") / "redis_server.py",
        Path("tests") / "redis_cluster.py",
        Path("tests") / "test_redis_cluster.py",
        Path("tests") / "test_broker_redis.py",
        Path("tests") / "test_redis_outage.py",
        Path("tests") / "test_redis_sentinel.py",
        Path("tests") / "test_multiprocess.py",
        Path("tests") / "test_host_failover.py",
    ],
}


def main() -> int:
    for broker, paths in ONLY_FOR.items():
        if broker != BROKER:
            for path in paths:
                path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
