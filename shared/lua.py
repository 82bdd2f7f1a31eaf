"""Lua shared by the Redis scripts of the API and the workers.

``NOW_MS`` defines ``now_ms()``: Redis's own clock in milliseconds. Scripts read Redis's clock,
not the caller's, so every API process and worker agrees on time (rate buckets, leases, ages).
A script that uses it starts with this text.
"""

from __future__ import annotations

NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
