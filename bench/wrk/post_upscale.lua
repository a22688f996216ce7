-- POST /upscale with one JPEG (BENCH_JPEG) as multipart/form-data, authenticated with BENCH_TOKEN.
local f = assert(io.open(os.getenv("BENCH_JPEG"), "rb"))
local jpeg = f:read("*a")
f:close()
local boundary = "petcambenchboundary7d1f"
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"file\"; filename=\"bench.jpg\"\r\n"
  .. "Content-Type: image/jpeg\r\n\r\n" .. jpeg .. "\r\n"
  .. "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"lat\"\r\n\r\n37.5665\r\n"
  .. "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"lng\"\r\n\r\n126.978\r\n"
  .. "--" .. boundary .. "--\r\n"
