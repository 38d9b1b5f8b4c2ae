-- wrk script: POST the JSON bodies in $BODY_FILES (paths separated by spaces) to the URL given on
-- the command line, one after another in turn (one file: the same body every time).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for path in string.gmatch(os.getenv("BODY_FILES"), "%S+") do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
wrk.body = bodies[1]
if #bodies > 1 then
  local sent = 0
  request = function()
    sent = sent + 1
    return wrk.format(nil, nil, nil, bodies[sent % #bodies + 1])
  end
end
