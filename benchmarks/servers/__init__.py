"""Comparison servers, one file each, all serving the same `/events` contract.

Every server reads SSE_MESSAGE_COUNT and SSE_MESSAGE_INTERVAL from the environment and
sends `retry:`, then `id: i` / `data: Message i` for i = 1..count, then `event: end`.
"""
