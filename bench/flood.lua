-- The read flood of bench section (g), for wrk: expensive reads, oversized bodies and unknown
-- routes, in turn; each connection waits 100 ms before its next request.
local big = string.rep("x", 2 * 1024 * 1024)
local n = 0
-- FLOOD_KINDS (e.g. "01") picks kinds: 0 /committed, 1 /chain, 2 oversized body, 3 unknown route.
local kinds = os.getenv("FLOOD_KINDS") or "0123"

request = function()
  n = n + 1
  local i = n % #kinds
  local k = tonumber(string.sub(kinds, i + 1, i + 1))
  if k == 0 then
    local from = 1 + (n % 64)
    return wrk.format("GET", "/committed?from=" .. from .. "&to=" .. (from + 255))
  elseif k == 1 then
    return wrk.format("GET", "/chain?from=" .. (1 + (n % 64)) .. "&limit=256")
  elseif k == 2 then
    return wrk.format("PUT", "/kv/flood", { ["Content-Type"] = "application/octet-stream" }, big)
  else
    return wrk.format("GET", "/no/such/route/" .. n)
  end
end

delay = function()
  return 100
end
