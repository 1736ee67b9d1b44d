-- wrk script for bench/compare: bench/webhook/post.lua (POST the AdmissionReview in $BODY,
-- count non-200 answers), plus REQUESTS=N: stop after N answers, so that two servers' CPU
-- time is read over the same number of admissions.
dofile("bench/webhook/post.lua")
local limit = tonumber(os.getenv("REQUESTS") or "0") or 0
local seen = 0
local counted = response
function response(status, headers, body)
  counted(status, headers, body)
  seen = seen + 1
  if limit > 0 and seen >= limit then wrk.thread:stop() end
end
