-- wrk script for bench/api_bench.py: POST one realistic pageview body with a bearer token.
-- The body and token come from the environment so the Python driver decides them.
wrk.method = "POST"
wrk.body = os.getenv("API_BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_BENCH_TOKEN")
