"""Every route and every dependency of a route is a coroutine function: FastAPI runs a plain `def`
one in its thread pool, a thread hop per request (it once made a 0.7 ms request 2 ms)."""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute

from pixelgate.app import create_app
from pixelgate.config import Settings


def _calls(dependant):
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _routes(routes):
    """The API routes, also those of included routers (FastAPI keeps those behind a wrapper)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _routes(router.routes)


def test_no_route_or_dependency_runs_in_the_thread_pool(tmp_path):
    app = create_app(Settings(data_dir=tmp_path))
    routes = list(_routes(app.routes))
    assert len(routes) > 100  # every API's routes are here, not only a few
    sync = {f"{sorted(route.methods)} {route.path}: {call.__qualname__}"
            for route in routes for call in _calls(route.dependant)
            if call is not None and not inspect.iscoroutinefunction(call)
            and not inspect.iscoroutinefunction(getattr(call, "__call__", None))}
    assert not sync, sorted(sync)
