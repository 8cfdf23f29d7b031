"""The whole server on one machine, for `make run`, the tests and the benchmarks.

Product code (services, gateway, `common.core`, `common.web`) never imports this part; the
tests, `bench/` and `python -m common.localstack.launcher` do.

- `launcher`: `Stack` (the database, every declared service and the gateway as child
  processes) and `make run`'s entry point
- `registry`: `discover`, the services that declare themselves in `services/<name>/service.py`
- `embedded`: the embedded Mongo-wire server process, `free_port`
- `keygen`: the keys and secrets of a fresh installation (`python -m common.localstack.keygen`)
- `processes`: child processes that die with their parent and stop with all they started
- `supervisor`: restarts crashed children with backoff, gives up on a crash loop
"""
