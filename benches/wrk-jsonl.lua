-- wrk script: POST /identify with the bodies of a JSON-lines file, in order, wrapping around.
-- Usage: wrk ... -s benches/wrk-jsonl.lua URL -- FILE [PAUSE_MS]
-- PAUSE_MS (optional) makes every connection pause between an answer and its next request, to
-- run at a fixed fraction of the maximum rate (for latency at half load). Each pause is drawn
-- from an exponential distribution of mean PAUSE_MS (rounded to whole milliseconds, wrk's
-- timer unit), so the connections' requests arrive independently, like customers' checkouts
-- (a Poisson stream). A fixed pause does not: connections answered in the same burst wake in
-- the same millisecond and send their next requests together, so the server sees bursts of
-- a hundred requests and idles between them. With a fixed 6 ms pause the ceiling's p50 was
-- 0.66-0.90 ms at about 16 k requests/s; with exponential pauses 0.16 ms at 20 k.
local lines = {}
local i = 0
local pause = 0

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  pause = tonumber(args[2] or "0")
  -- Threads start at different offsets so they do not send the same requests in lockstep.
  i = math.random(#lines) - 1
end

function delay()
  if pause <= 0 then
    return 0
  end
  -- Inverse transform sampling: -mean * ln(U) for U uniform in (0, 1].
  return math.floor(-pause * math.log(1 - math.random()) + 0.5)
end

function request()
  i = i + 1
  if i > #lines then i = 1 end
  return wrk.format("POST", "/identify", { ["Content-Type"] = "application/json" }, lines[i])
end
