"""The baked app as a user grows it: CORS for a page on another origin, private channels on.

Measured beside the bake as it comes (`baked`), so the report shows what a user's own
middleware and the channels' authorization cost on the stream path. The runner puts the
baked package on the path and names its main module in SSE_BENCH_MAIN.
"""

import importlib
import os

from fastapi.middleware.cors import CORSMiddleware

ORIGIN = "http://127.0.0.1"  # what the load generator sends as its Origin

main = importlib.import_module(os.environ["SSE_BENCH_MAIN"])
app = main.create_app()
app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_credentials=True)
