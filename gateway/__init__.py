"""Fleetport's API gateway: routes public paths to services, checks tokens, streams bodies."""

from gateway.app import STATUS_PATH, Gateway
from gateway.config import Settings
from gateway.main import create_app, server_config

__all__ = ["STATUS_PATH", "Gateway", "Settings", "create_app", "server_config"]
