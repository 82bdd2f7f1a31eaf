-- wrk script for bench/api_bench.py and bench/e2e_bench.py: POST one realistic pageview body
-- (or a batch of them) with a bearer token. The body, token and optional request count come
-- from the environment so the Python driver decides them.
wrk.method = "POST"
wrk.body = os.getenv("API_BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_BENCH_TOKEN")

-- API_BENCH_REQUESTS: stop sending once that many answers arrived, and create the file
-- API_BENCH_DONE (run wrk with one thread and a long -d; wrk then waits out -d unless
-- interrupted, so the driver sends SIGINT once the file exists and wrk prints its summary):
-- the end-to-end bench posts a known number of pageviews, then waits until all are stored.
local limit = tonumber(os.getenv("API_BENCH_REQUESTS") or "")
local answered = 0
if limit then
  function response(status, headers, body)
    answered = answered + 1
    if answered == limit then
      wrk.thread:stop()
      io.open(os.getenv("API_BENCH_DONE"), "w"):close()
    end
  end
end
