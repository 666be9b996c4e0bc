-- wrk script: POST /identify with the bodies of a JSON-lines file, in order, wrapping around.
-- Usage: wrk ... -s benches/wrk-jsonl.lua URL -- FILE [DELAY_MS]
-- DELAY_MS (optional) makes every connection pause between requests, to run at a fixed
-- fraction of the maximum rate (for latency at half load).
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
  return pause
end

function request()
  i = i + 1
  if i > #lines then i = 1 end
  return wrk.format("POST", "/identify", { ["Content-Type"] = "application/json" }, lines[i])
end
