-- wrk script of the bench: a bound on the requests of each wrk thread, beside wrk's own -d time
-- bound, so every load stops by itself. The request is built once per thread (with -H headers).
local limit = tonumber(os.getenv("BENCH_MAX_REQUESTS_PER_THREAD")) or 2000000
local sent = 0
local prepared = nil

function init(args)
  prepared = wrk.format()
end

function request()
  sent = sent + 1
  if sent > limit then
    wrk.thread:stop()
  end
  return prepared
end
