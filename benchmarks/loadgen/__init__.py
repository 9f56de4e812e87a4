"""A load generator on raw asyncio streams: thousands of SSE clients in one process."""
