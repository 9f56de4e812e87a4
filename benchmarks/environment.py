"""What the numbers were measured on: a table is meaningless without the machine."""

import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess

PACKAGES = ["fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sse-starlette", "redis"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def redis_version() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return next((w.split("=", 1)[1] for w in out.stdout.split() if w.startswith("v=")), None)


def describe() -> dict[str, object]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["redis-server"] = redis_version()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }
