-- wrk script for bench/reliability/webhook-soak: a round-robin mix of admission requests over
-- keep-alive connections, every answer checked against the kind of request it answers.
--
-- MIX names the requests, separated by ';', each `kind=path` (kinds: inject, skip, deny,
-- invalid, notjson, ctype; see webhook_soak.py). Each AdmissionReview carries the uid
-- `soak-<kind>`, which the answer echoes, so an answer is matched to its request even though
-- one wrk thread serves many connections. REQUESTS=N stops sending after N answers (0: run
-- for -d); wrk itself still waits for -d, or for SIGINT, before it prints its summary.
--
-- done() prints one line, `mix: sent=N answered=N k=v ...`, with per-kind counts, `wrong` (an
-- answer of the wrong kind or shape), `s5xx`, and the other statuses. wrk prints its own
-- "Socket errors" line on connection errors.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Thread state (globals, so that done() can read them with thread:get).
sent, answered, wrong, s5xx, other = 0, 0, 0, 0, 0
counts = {}
local reqs, kinds = {}, {}
local limit = tonumber(os.getenv("REQUESTS") or "0") or 0
-- CLOSE=1: a new TLS connection per request (wrk.format does not take wrk's -H headers).
local close = os.getenv("CLOSE") == "1"
-- PAUSE_MS=n: each connection waits n ms after an answer before its next request (paced
-- load, as kube-apiserver sends: a request when a pod is created, not one as soon as the last
-- is answered). wrk's latency is measured from the request's write, so the pause is not in it.
local pause = tonumber(os.getenv("PAUSE_MS") or "0") or 0
if pause > 0 then
  function delay() return pause end
end

function init(args)
  local mix = os.getenv("MIX") or error("MIX must list kind=path entries")
  for entry in string.gmatch(mix, "[^;]+") do
    local kind, path = string.match(entry, "^([%w_-]+)=(.+)$")
    assert(kind, "bad MIX entry " .. entry)
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    local headers = { ["Content-Type"] = "application/json" }
    if kind == "ctype" then headers["Content-Type"] = "text/plain" end
    if close then headers["Connection"] = "close" end
    table.insert(reqs, wrk.format("POST", "/mutate", headers, body))
    table.insert(kinds, kind)
    counts[kind] = 0
  end
end

local next_req = 0
function request()
  next_req = next_req % #reqs + 1
  sent = sent + 1
  return reqs[next_req]
end

-- The kind an answer belongs to, or nil when it is wrong for every kind.
local function classify(status, body)
  if status == 400 then
    if string.find(body, "^the request body is not JSON") then return "notjson" end
    if string.find(body, "^unsupported content type") then return "ctype" end
    return nil
  end
  if status ~= 200 then return nil end
  local uid = string.match(body, '"uid":"soak%-([%w]+)"')
  if uid == nil then return nil end
  local allowed = string.find(body, '"allowed":true', 1, true) ~= nil
  local patch = string.find(body, '"patch":', 1, true) ~= nil
  if uid == "inject" and allowed and patch then return uid end
  if uid == "skip" and allowed and not patch then return uid end
  if (uid == "deny" or uid == "invalid") and not allowed and not patch then return uid end
  return nil
end

function response(status, headers, body)
  answered = answered + 1
  if status >= 500 then s5xx = s5xx + 1 end
  local kind = classify(status, body)
  if kind == nil then
    wrong = wrong + 1
    if status ~= 200 and status ~= 400 and status < 500 then other = other + 1 end
  else
    counts[kind] = counts[kind] + 1
  end
  if limit > 0 and answered >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local total = { sent = 0, answered = 0, wrong = 0, s5xx = 0, other = 0 }
  local per = {}
  for _, t in ipairs(threads) do
    for k, _ in pairs(total) do total[k] = total[k] + t:get(k) end
    for k, v in pairs(t:get("counts")) do per[k] = (per[k] or 0) + v end
  end
  local line = string.format("mix: sent=%d answered=%d wrong=%d s5xx=%d other=%d",
    total.sent, total.answered, total.wrong, total.s5xx, total.other)
  local names = {}
  for k, _ in pairs(per) do table.insert(names, k) end
  table.sort(names)
  for _, k in ipairs(names) do line = line .. string.format(" %s=%d", k, per[k]) end
  io.write(line .. "\n")
  io.write(string.format("latency_us: p50=%d p90=%d p99=%d max=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
