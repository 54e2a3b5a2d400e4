"""Every route's dependencies are ``async def``: FastAPI runs a plain ``def`` dependency (or route)
in its thread pool, a hop of ~0.1 ms per request, and none of ours blocks (pagination and
the typed ``Provide`` were such hops once)."""

import importlib
import inspect
import pkgutil

import pytest
from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from microshop_chassis.app import create_app
from microshop_chassis.services import SERVICES
from microshop_chassis.settings import ServiceSettings


def _routers(package: str) -> list[APIRouter]:
    root = importlib.import_module(package)
    names = [info.name for info in pkgutil.walk_packages(root.__path__, f"{package}.")
             if ".migrations" not in info.name and not info.name.endswith(".__main__")]  # __main__ serves
    modules = [root, *map(importlib.import_module, names)]
    return [value for module in modules for value in vars(module).values() if isinstance(value, APIRouter)]


def _sync_calls(dependant: Dependant, where: str) -> list[str]:
    found = []
    for dependency in dependant.dependencies:
        call = dependency.call
        target = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
        if not inspect.iscoroutinefunction(target):
            found.append(f"{where}: {getattr(call, '__qualname__', repr(call))}")
        found += _sync_calls(dependency, where)
    return found


def _sync_in(routes) -> list[str]:
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            where = f"{sorted(route.methods)} {route.path}"
            if not inspect.iscoroutinefunction(route.endpoint):
                found.append(f"{where}: the route itself")
            found += _sync_calls(route.dependant, where)
    return found


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_no_service_route_runs_a_dependency_in_the_thread_pool(spec):
    routers = _routers(spec.package)
    assert routers, f"{spec.package} declares no APIRouter"
    assert _sync_in(route for router in routers for route in router.routes) == []


def test_no_chassis_route_runs_a_dependency_in_the_thread_pool(tmp_path):
    app = create_app(settings=ServiceSettings(service_name="async-check", data_dir=tmp_path), version="1", routers=[])
    assert _sync_in(app.routes) == []
