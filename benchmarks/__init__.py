"""Side-by-side SSE benchmark: comparison servers, a raw-asyncio load generator, a runner."""
