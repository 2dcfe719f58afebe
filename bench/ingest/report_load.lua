-- wrk script for the ingest benchmark: POST report bodies, count statuses, stop cleanly.
--
-- usage: wrk -t1 -c64 -d<seconds + drain> --timeout 30s -s report_load.lua <base-url> \
--            -- <bodies.ndjson> <path> <api-key> <seconds>
--
-- Each thread sends requests for <seconds> (measured from its start), then stops sending
-- (delay() returns an hour) so every request in flight gets its answer before wrk exits:
-- no request is abandoned, so the rows in the database must equal the 202s counted here.
-- The wrk run must last longer than <seconds> by more than the slowest response.
-- done() prints one line "WRK_RESULT {json}" for bench/ingest/run.py.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Main state: remember the threads so done() can read their counters.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread state (each thread runs its own copy of this script).
local reqs, nreqs, idx, stop_at
function init(args)
  local bodies, path, key, seconds = args[1], args[2], args[3], tonumber(args[4])
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }
  reqs = {}
  for line in io.lines(bodies) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("POST", path, headers, line)
    end
  end
  nreqs = #reqs
  idx = 0
  started = now()
  stop_at = started + seconds
  -- Globals, read by done() through thread:get().
  s202, s503, sother = 0, 0, 0
  win202, win_answers = 0, 0   -- answers that arrived before stop_at
  delays, stopped = 0, 0       -- requests released (wrk asks before each one); stops
  first_answer, last_answer = 0, 0
  window = seconds
end

function delay()
  if now() >= stop_at then
    stopped = stopped + 1
    return 3600000
  end
  delays = delays + 1
  return 0
end

function request()
  idx = idx % nreqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  local t = now()
  if status == 202 then
    s202 = s202 + 1
    if t < stop_at then win202 = win202 + 1 end
  elseif status == 503 then
    s503 = s503 + 1
  else
    sother = sother + 1
  end
  if t < stop_at then win_answers = win_answers + 1 end
  if first_answer == 0 then first_answer = t - started end
  last_answer = t - started
end

function done(summary, latency, requests)
  local keys = { "s202", "s503", "sother", "win202", "win_answers", "delays", "stopped" }
  local total = {}
  for _, k in ipairs(keys) do total[k] = 0 end
  local last, window = 0, 0
  for _, thread in ipairs(threads) do
    for _, k in ipairs(keys) do total[k] = total[k] + (thread:get(k) or 0) end
    last = math.max(last, thread:get("last_answer") or 0)
    window = thread:get("window") or window
  end
  local e = summary.errors
  local fields = {}
  local function add(k, v) fields[#fields + 1] = string.format('"%s": %s', k, v) end
  for _, k in ipairs(keys) do add(k, string.format("%d", total[k])) end
  add("threads", #threads)
  add("window_s", string.format("%.6f", window))
  add("last_answer_s", string.format("%.6f", last))
  add("completed", string.format("%d", summary.requests))
  add("duration_us", string.format("%d", summary.duration))
  add("bytes", string.format("%d", summary.bytes))
  add("err_connect", e.connect)
  add("err_read", e.read)
  add("err_write", e.write)
  add("err_status", e.status)
  add("err_timeout", e.timeout)
  add("lat_mean_us", string.format("%.1f", latency.mean))
  add("lat_stdev_us", string.format("%.1f", latency.stdev))
  add("lat_max_us", string.format("%d", latency.max))
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    add(string.format("lat_p%s_us", tostring(p)), string.format("%d", latency:percentile(p)))
  end
  io.write("WRK_RESULT {" .. table.concat(fields, ", ") .. "}\n")
end
