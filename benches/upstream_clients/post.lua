-- wrk script for the upstream-client benchmark: POST /v1/messages with a ~2 KB Anthropic-style
-- JSON body; `-- stream` as script argument sets "stream":true, `-- stream paced=N` also asks the
-- fake upstream to pace its events N ms apart (x-bench-pace-ms). done() prints one JSON line
-- (prefixed RESULT_JSON) with requests, duration, latency percentiles and every error count.
local stream = false
local pace = nil

function init(args)
  for _, a in ipairs(args) do
    if a == "stream" then stream = true end
    local p = a:match("^paced=(.+)$")
    if p then pace = p end
  end
  local pad = string.rep("All work and no play makes Jack a dull boy. ", 40)
  local body = '{"model":"claude-sonnet-4-5-20250929","max_tokens":1024,"stream":'
    .. (stream and "true" or "false")
    .. ',"system":"You are a benchmark.","messages":[{"role":"user","content":"'
    .. pad .. '"}],"metadata":{"user_id":"bench-user-0001"}}'
  local target = 2048
  if #body < target then
    body = body:sub(1, #body - 1) .. ',"x_pad":"' .. string.rep("p", target - #body - 12) .. '"}'
  end
  wrk.method = "POST"
  wrk.path = "/v1/messages"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["anthropic-version"] = "2023-06-01"
  wrk.headers["x-api-key"] = "sk-ant-bench"
  if pace then wrk.headers["x-bench-pace-ms"] = pace end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,'
      .. '"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
