"""Load benchmark for a running Maestro server (or the original server it replaces).

`python -m bench --url http://127.0.0.1:3000` drives the server over HTTP and WebSocket and prints
ops/s and latency percentiles per workload; `python -m bench.coldstart` measures start-up time
on a large data directory. Neither is part of the test suite."""
