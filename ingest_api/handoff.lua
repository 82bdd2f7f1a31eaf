-- Admit a batch of requests, each atomically: token-bucket rate limit, queue-depth check,
-- stream append. A request's envelopes are appended only if all of it is accepted (never a
-- partial write); requests are decided in order, each seeing the ones before it.
--
-- KEYS[1] ingest stream    KEYS[1 + i] rate bucket hash (tokens, updated_ms) of request i
-- ARGV[1] rate (tokens per second)   ARGV[2] burst   ARGV[3] maximum stream length
-- ARGV[4] envelope field name        ARGV[4 + i] number of envelopes of request i (0: charge
--         one item, append nothing)  then every request's envelopes, in request order
--
-- Returns 4 integers per request: verdict (0 accepted, 1 rate limited, 2 queue full),
-- remaining items, seconds until the bucket is full again, and (rate limited only) seconds
-- until the bucket holds enough.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_depth = tonumber(ARGV[3])
local field = ARGV[4]
local requests = #KEYS - 1

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local depth = redis.call('XLEN', KEYS[1])
local replies = {}
local next_envelope = 5 + requests

for i = 1, requests do
  local bucket_key = KEYS[1 + i]
  local count = tonumber(ARGV[4 + i])
  local cost = math.max(count, 1)
  local bucket = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms')
  local tokens = burst
  if bucket[1] then
    local elapsed_ms = math.max(0, now_ms - tonumber(bucket[2]))
    tokens = math.min(burst, tonumber(bucket[1]) + elapsed_ms * rate / 1000)
  end
  local verdict, retry_after = 0, 0
  if tokens < cost then
    verdict, retry_after = 1, math.ceil((cost - tokens) / rate)
  elseif count > 0 and depth + count > max_depth then
    verdict = 2
  else
    tokens = tokens - cost
    redis.call('HSET', bucket_key, 'tokens', tostring(tokens), 'updated_ms', now_ms)
    -- A full bucket is the same as no bucket, so the key lives only until it would be full.
    redis.call('PEXPIRE', bucket_key, math.ceil((burst - tokens) * 1000 / rate))
    for j = next_envelope, next_envelope + count - 1 do
      redis.call('XADD', KEYS[1], '*', field, ARGV[j])
    end
    depth = depth + count
  end
  next_envelope = next_envelope + count
  local reset = math.ceil((burst - tokens) / rate)
  replies[#replies + 1] = verdict
  replies[#replies + 1] = math.floor(tokens)
  replies[#replies + 1] = reset
  replies[#replies + 1] = retry_after
end
return replies
