"""One error tree: every exception class defined in libs, services and deploy is a FulcrumError.

Every module of the three packages is imported (a module that fails to import fails the test), and
every exception class defined at its top level must derive from ``FulcrumError``, beside the
stdlib base its callers catch (``class TlsMaterialError(FulcrumError, ValueError)``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import deploy
import libs
import services
from libs.common.errors import ConfigurationError, FulcrumError

# Classes known to sit outside the tree, each with the change that brings it in. Every entry
# must name a class that still exists (test_known_exceptions_are_current), so none outlives
# its fix.
KNOWN_OUTSIDE: dict[str, str] = {}


def refuse_unimportable(name: str) -> None:
    raise AssertionError(f"{name} does not import")


def all_modules() -> list[ModuleType]:
    """Every module of libs, services and deploy, imported."""
    modules: list[ModuleType] = []
    for package in (libs, services, deploy):
        modules.append(package)
        walk = pkgutil.walk_packages(
            package.__path__, prefix=f"{package.__name__}.", onerror=refuse_unimportable
        )
        modules.extend(importlib.import_module(info.name) for info in walk)
    return modules


def defined_exceptions() -> dict[str, type[BaseException]]:
    """``module.Class`` -> class, for the exception classes each module defines itself."""
    found: dict[str, type[BaseException]] = {}
    for module in all_modules():
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_the_walk_sees_every_package() -> None:
    names = {module.__name__ for module in all_modules()}
    for expected in (
        "libs.common.errors",
        "libs.common.events._registry",
        "services.api.__main__",
        "services.provisioner.app",
        "services.health.app",
        "services.housekeeping.app",
        "services.amphora.adapters.haproxy",
        "deploy.local.state",
    ):
        assert expected in names


def test_every_exception_class_is_a_fulcrum_error() -> None:
    exceptions = defined_exceptions()
    assert "libs.common.tls.TlsMaterialError" in exceptions  # the walk found the classes
    outside = sorted(
        name
        for name, cls in exceptions.items()
        if not issubclass(cls, FulcrumError) and name not in KNOWN_OUTSIDE
    )
    assert outside == [], f"exception classes outside FulcrumError: {outside}"


def test_known_exceptions_are_current() -> None:
    exceptions = defined_exceptions()
    for name in KNOWN_OUTSIDE:
        assert name in exceptions, f"{name} is gone: drop it from KNOWN_OUTSIDE"
        assert not issubclass(exceptions[name], FulcrumError), f"{name} is in the tree now"


@pytest.mark.parametrize(
    ("name", "stdlib_base"),
    [
        ("libs.common.tls.TlsMaterialError", ValueError),
        ("libs.common.secretstore.UnusableReference", ValueError),
        ("libs.common.events._registry.UnknownEventType", LookupError),
        ("libs.common.events._registry.UnsupportedSchemaVersion", LookupError),
        ("services.api.auth.tokens.InvalidToken", ValueError),
    ],
)
def test_stdlib_bases_are_kept_for_their_callers(
    name: str, stdlib_base: type[BaseException]
) -> None:
    assert issubclass(defined_exceptions()[name], stdlib_base)


def test_configuration_errors_are_value_errors() -> None:
    assert issubclass(ConfigurationError, FulcrumError)
    assert issubclass(ConfigurationError, ValueError)
