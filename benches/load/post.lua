-- The same request to every target: a canonical start (the upstreams ignore what they do not need).
wrk.method = "POST"
wrk.body   = '{"identifier":{"type":"email","value":"somchai@example.com"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
