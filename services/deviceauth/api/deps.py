"""Dependency aliases shared by the deviceauth routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.deviceauth.app import DevAuthApp

__all__ = ["DevAuthDep"]


def _devauth(request: Request) -> DevAuthApp:
    app: DevAuthApp = request.app.state.devauth
    return app


DevAuthDep = Annotated[DevAuthApp, Depends(_devauth)]
