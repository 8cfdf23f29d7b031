"""`python -m gateway`: serve the gateway on GATEWAY_LISTEN_HOST:GATEWAY_LISTEN_PORT."""

from gateway.main import run

run()
