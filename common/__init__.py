"""Code shared by every Fleetport service and the gateway, in three parts.

- `common.core`: the framework-free library every process may use (errors, settings,
  MongoDB access, the outbox, tokens, peers, request ids, paging and claims, logging).
- `common.web`: what a FastAPI service is built from (the app factory and `serve`, paging
  headers, caller identity, path conventions).
- `common.localstack`: the tooling that runs the whole server on one machine for `make run`
  and the tests (launcher, embedded database, keys, process supervision). Product code never
  imports it.

The import contracts in `pyproject.toml` keep the parts apart.
"""
