-- Admit the requests of one call, each atomically: stored answer, rate limit (a bucket of
-- items per subject), client retries, the lane's depth and the token's share of it, stream
-- append. A request's envelopes are appended only if all of it is accepted; requests are
-- decided in order, each seeing the ones before it. (A token here is always an API token.)
--
-- KEYS[1], KEYS[2] the live and bulk streams   KEYS[3], KEYS[4] their queued-by-token hashes
-- KEYS[5..] the rate buckets, one per subject: a hash of the items it holds (field 'tokens', its
-- name since the first release: buckets outlive an upgrade) and updated_ms
-- ARGV[1] rate (items per second)   ARGV[2] burst   ARGV[3], ARGV[4] live and bulk maximum
-- stream length   ARGV[5] a token's share of a lane's maximum   ARGV[6] envelope field name
-- ARGV[7] token field name   ARGV[8] idempotency window (seconds)
-- then per request: the index in KEYS of its bucket, cost (items charged), envelope count,
-- answer key ('' for none), answer body, lane (1 live, 2 bulk), token id, then per envelope:
-- seen key ('' when the API generated the page_id), envelope.
--
-- Returns 5 values per request: verdict (0 accepted, 1 rate limited, 2 lane full, 3 answered
-- before, 4 the token's share of the lane full), remaining whole items (negative while the
-- bucket is in debt), seconds until the bucket is full again, (rate limited only) seconds
-- until the bucket holds enough, and (answered before only) the stored answer.
--
-- A cost above the burst could never be paid, so such a request only needs a full bucket and
-- leaves it in debt (negative): the long-run rate stays exactly `rate` items per second.
-- A bucket is read once per call and written once at its end (one clock reading for the whole
-- call, so this is the same as updating it per request, at a third of the commands).
-- Each envelope is appended before its seen key is set, so a failed XADD (which aborts the
-- script) never marks an id as seen; refused requests set nothing. A token's count in its
-- lane's hash grows by what the call appended for it, in one HINCRBY per lane and token at
-- the call's end (one per request cost Redis ~2.5 us more per accepted pageview: 12.2
-- against 9.5 us in commandstats, 64 concurrent requests driven in process, same run); the
-- worker's acknowledgement shrinks it (workers.queue). Redis lets a script that has written
-- go on writing when memory runs out, so no XADD fails after another succeeded, and the
-- counts stay exact.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_depths = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local share = tonumber(ARGV[5])
local field, token_field = ARGV[6], ARGV[7]
local window = tonumber(ARGV[8])

local now_ms = now_ms()  -- shared.lua.NOW_MS, prepended by ingest_api.handoff
local replies = {}
local at = 9
local items_of = {}  -- KEYS index -> the items its bucket holds now
local charged = {}  -- KEYS indexes of the buckets to write back
local depths = {}  -- lane -> its stream's length now
local queued_of = {{}, {}}  -- lane -> token id -> its entries in the lane now
local appended = {{}, {}}  -- lane -> token id -> entries this call appended for it

local function depth_of(lane)
  if depths[lane] == nil then depths[lane] = redis.call('XLEN', KEYS[lane]) end
  return depths[lane]
end

local function queued_in(lane, token)
  if queued_of[lane][token] == nil then
    queued_of[lane][token] = tonumber(redis.call('HGET', KEYS[lane + 2], token) or 0)
  end
  return queued_of[lane][token]
end

local function items_in(index)
  if items_of[index] == nil then
    local bucket = redis.call('HMGET', KEYS[index], 'tokens', 'updated_ms')
    local items = burst
    if bucket[1] then
      local elapsed_ms = math.max(0, now_ms - tonumber(bucket[2]))
      items = math.min(burst, tonumber(bucket[1]) + elapsed_ms * rate / 1000)
    end
    items_of[index] = items
  end
  return items_of[index]
end

local function reply(verdict, items, retry_after, stored)
  replies[#replies + 1] = verdict
  replies[#replies + 1] = math.floor(items)  -- negative in debt: the API's ceiling of the bucket
  replies[#replies + 1] = math.ceil((burst - items) / rate)
  replies[#replies + 1] = retry_after
  replies[#replies + 1] = stored
end

local argument_count = #ARGV
while at <= argument_count do
  local bucket = tonumber(ARGV[at])
  local cost = tonumber(ARGV[at + 1])
  local count = tonumber(ARGV[at + 2])
  local answer_key, answer = ARGV[at + 3], ARGV[at + 4]
  local lane, token = tonumber(ARGV[at + 5]), ARGV[at + 6]
  local first_envelope = at + 7
  at = first_envelope + 2 * count

  local items = items_in(bucket)
  local stored = answer_key ~= '' and redis.call('GET', answer_key)
  local needed = math.min(cost, burst)
  if items < needed then
    reply(1, items, math.ceil((needed - items) / rate), '')
  elseif stored then
    -- A replay is charged like any request: a repeated key must not be a free pass.
    items = items - cost
    items_of[bucket] = items
    charged[bucket] = true
    reply(3, items, 0, stored)
  else
    -- Retried ids (seen within the window, or twice in this request) are answered, not queued.
    local fresh, taken = {}, {}
    for j = first_envelope, at - 1, 2 do
      local seen_key = ARGV[j]
      if seen_key == '' or (not taken[seen_key] and redis.call('EXISTS', seen_key) == 0) then
        fresh[#fresh + 1] = j
        taken[seen_key] = true
      end
    end
    if #fresh > 0 and depth_of(lane) + #fresh > max_depths[lane] then
      reply(2, items, 0, '')
    elseif #fresh > 0 and queued_in(lane, token) + #fresh > math.max(1, math.floor(max_depths[lane] * share)) then
      reply(4, items, 0, '')
    else
      items = items - cost
      items_of[bucket] = items
      charged[bucket] = true
      for _, j in ipairs(fresh) do
        redis.call('XADD', KEYS[lane], '*', field, ARGV[j + 1], token_field, token)
        if ARGV[j] ~= '' then
          redis.call('SET', ARGV[j], 1, 'EX', window)
        end
      end
      if #fresh > 0 then
        depths[lane] = depths[lane] + #fresh
        queued_of[lane][token] = queued_of[lane][token] + #fresh
        appended[lane][token] = (appended[lane][token] or 0) + #fresh
      end
      if answer_key ~= '' then
        redis.call('SET', answer_key, answer, 'EX', window)
      end
      reply(0, items, 0, '')
    end
  end
end
for lane = 1, 2 do
  for token, count in pairs(appended[lane]) do
    redis.call('HINCRBY', KEYS[lane + 2], token, count)
  end
end
for bucket in pairs(charged) do
  local items = items_of[bucket]
  redis.call('HSET', KEYS[bucket], 'tokens', tostring(items), 'updated_ms', now_ms)
  -- A full bucket is the same as no bucket, so the key lives only until it would be full.
  redis.call('PEXPIRE', KEYS[bucket], math.ceil((burst - items) * 1000 / rate))
end
return replies
