-- wrk script: POST the AdmissionReview in $BODY to the webhook, over keep-alive connections.
-- Counts non-200 answers and prints them at the end (bench/webhook/load fails on any).
local path = os.getenv("BODY") or error("BODY must name the request body file")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
-- CONNECTION=close: one TLS connection per request (wrk reconnects after each answer).
local connection = os.getenv("CONNECTION")
if connection and connection ~= "" then wrk.headers["Connection"] = connection end

-- response() runs in each thread's Lua state and done() in the main one, so the count is a
-- global of the thread, read back through the thread handles that setup() keeps.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("non-200 responses: %d\n", total))
  io.write(string.format("latency p50 %.3f ms, p90 %.3f ms, p99 %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
