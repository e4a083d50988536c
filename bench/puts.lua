-- Single-key writes of bench section (h), for wrk: every request a PUT of a new key
-- (/kv/<prefix>-<thread>-<n>) with a 16-byte value; the replica answers once it is committed.
local prefix = os.getenv("PUT_PREFIX") or "p"
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local id = 0
local n = 0
local value = string.rep("v", 16)

function init(args)
  id = wrk.thread:get("id")
end

request = function()
  n = n + 1
  local path = "/kv/" .. prefix .. "-" .. id .. "-" .. n
  return wrk.format("PUT", path, { ["Content-Type"] = "application/octet-stream" }, value)
end
