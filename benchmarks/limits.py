"""File-descriptor limit: every held connection is one descriptor on each side."""

import resource


def raise_nofile(needed: int = 0) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    Both the load generator and each server call this (the servers through their
    launcher), since 10,000 connections exceed the usual soft limit of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, needed, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if needed and soft < needed:
        raise SystemExit(f"need {needed} file descriptors but the hard limit is {hard}")
    return soft
