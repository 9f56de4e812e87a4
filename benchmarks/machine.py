"""Whole-machine CPU from /proc/stat: how busy the box was, and waiting for it to be quiet.

The benchmark shares 2 cores with whatever else runs (other test suites, a browser).
Sequential servers see different noise, so each row records the CPU used by everything
other than the server and the load generator, and a run can wait for a quiet machine.
"""

import os
import sys
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """Non-idle CPU seconds of all cores since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    # guest time is already counted in user; steal is time the VM did not get.
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def wait_for_quiet(max_wait: float, busy_cores: float = 0.15, window: float = 1.0) -> float:
    """Wait until the machine's CPU use over `window` is below `busy_cores`, at most
    `max_wait` seconds; return the use of the last window (cores)."""
    load = 0.0
    for _ in range(max(1, int(max_wait / window))):
        before = busy_seconds()
        time.sleep(window)
        load = (busy_seconds() - before) / window
        if load < busy_cores or max_wait <= 0:
            return load
    print(f"   machine still busy ({load:.2f} cores) after {max_wait:.0f} s", file=sys.stderr)
    return load
