"""The public API surface: ``__all__`` lists, docstrings, and the error hierarchy."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

import pytest

import asyncron
from asyncron import errors

#: Modules whose names are public (no underscore in the dotted path).
PUBLIC_MODULES = (
    "asyncron",
    "asyncron.distributed",
    "asyncron.distributed.file",
    "asyncron.distributed.memory",
    "asyncron.distributed.postgres",
    "asyncron.distributed.protocols",
    "asyncron.distributed.redis",
    "asyncron.errors",
    "asyncron.pytest_plugin",
    "asyncron.testing",
)

#: Private modules with helpers shared inside asyncron, deliberately not re-exported.
INTERNAL_MODULES = frozenset({"asyncron._runner", "asyncron._time", "asyncron.distributed._common"})


def all_modules() -> list[str]:
    names = sorted(info.name for info in pkgutil.walk_packages(asyncron.__path__, "asyncron."))
    return ["asyncron", *names]


def isort_key(name: str) -> tuple[int, str]:
    """RUF022's isort-style order: CONSTANTS, then Classes, then functions."""
    if name.isupper() and len(name) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def defined_here(module: ModuleType) -> dict[str, Any]:
    """The public classes and functions a module defines (not those it imports)."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }


class TestAll:
    def test_public_modules_are_all_the_public_modules(self) -> None:
        """The list checked here covers every public module of the package."""
        public = {
            name
            for name in all_modules()
            if not any(part.startswith("_") for part in name.split("."))
        }
        assert public == set(PUBLIC_MODULES)

    @pytest.mark.parametrize("module_name", PUBLIC_MODULES)
    def test_every_name_in_all_exists(self, module_name: str) -> None:
        """Every name listed in a public module's ``__all__`` is an attribute of it."""
        module = importlib.import_module(module_name)
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []

    @pytest.mark.parametrize("module_name", all_modules())
    def test_all_is_sorted(self, module_name: str) -> None:
        """``__all__`` is sorted isort-style: constants, then classes, then functions."""
        exported = getattr(importlib.import_module(module_name), "__all__", ())
        assert list(exported) == sorted(exported, key=isort_key)

    @pytest.mark.parametrize("module_name", all_modules())
    def test_all_is_a_unique_tuple(self, module_name: str) -> None:
        """``__all__`` is a tuple without duplicates."""
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            pytest.skip("no __all__")
        assert isinstance(exported, tuple)
        assert len(set(exported)) == len(exported)

    @pytest.mark.parametrize("module_name", PUBLIC_MODULES)
    def test_public_module_lists_what_it_defines(self, module_name: str) -> None:
        """Every public class and function a public module defines is in its ``__all__``."""
        module = importlib.import_module(module_name)
        unlisted = sorted(set(defined_here(module)) - set(module.__all__))
        assert unlisted == []

    @pytest.mark.parametrize(
        "module_name",
        [
            name
            for name in all_modules()
            if name.split(".")[-1].startswith("_") and name not in INTERNAL_MODULES
        ],
    )
    def test_private_module_api_is_reexported(self, module_name: str) -> None:
        """A private module's public classes and functions are re-exported by its package."""
        module = importlib.import_module(module_name)
        package = importlib.import_module(module_name.rsplit(".", 1)[0])
        listed = set(getattr(module, "__all__", ()))
        for name, obj in defined_here(module).items():
            if name in listed:
                assert name in package.__all__, f"{module_name}.{name}"
                assert getattr(package, name) is obj

    def test_errors_are_reexported(self) -> None:
        """Every exception in asyncron.errors is importable from asyncron."""
        assert set(errors.__all__) <= set(asyncron.__all__)

    def test_internal_modules_are_not_leaked(self) -> None:
        """Nothing in ``asyncron.__all__`` comes from an internal helper module."""
        for name in asyncron.__all__:
            module = getattr(getattr(asyncron, name), "__module__", "")
            assert module not in INTERNAL_MODULES, name


def public_objects(module_name: str) -> list[tuple[str, Any]]:
    """A public module's exported classes and functions, with their public methods and
    properties."""
    module = importlib.import_module(module_name)
    found: list[tuple[str, Any]] = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or callable(obj):
            found.append((name, obj))
        if inspect.isclass(obj):
            for member_name, member in vars(obj).items():
                if member_name.startswith("_"):
                    continue
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    found.append((f"{name}.{member_name}", member))
    return found


class TestDocstrings:
    @pytest.mark.parametrize("module_name", PUBLIC_MODULES)
    def test_public_names_have_docstrings(self, module_name: str) -> None:
        """Every public class, function, method and property has a docstring."""
        objects = public_objects(module_name)
        assert objects
        undocumented = [
            name for name, obj in objects if not (getattr(obj, "__doc__", None) or "").strip()
        ]
        assert undocumented == []

    @pytest.mark.parametrize("module_name", PUBLIC_MODULES)
    def test_public_modules_have_docstrings(self, module_name: str) -> None:
        """The package and its public modules say what they are."""
        assert (importlib.import_module(module_name).__doc__ or "").strip()


class TestErrorHierarchy:
    @pytest.mark.parametrize(
        ("error", "bases"),
        [
            (errors.ConfigurationError, (errors.AsyncronError, ValueError)),
            (errors.InvalidScheduleError, (errors.ConfigurationError, ValueError)),
            (errors.ConflictingJobError, (errors.AsyncronError, ValueError)),
            (errors.InvalidJobError, (errors.AsyncronError, TypeError)),
            (errors.JobLookupError, (errors.AsyncronError, LookupError)),
            (errors.SchedulerStateError, (errors.AsyncronError, RuntimeError)),
            (errors.LockNotAcquired, (errors.AsyncronError,)),
            (errors.TickClaimed, (errors.LockNotAcquired,)),
            (errors.LockHeld, (errors.LockNotAcquired,)),
            (errors.LockLostError, (errors.AsyncronError,)),
            (errors.RunTimeout, (errors.AsyncronError, TimeoutError)),
        ],
    )
    def test_subclasses(self, error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
        """Each error sits where design §6 draws it, under its builtin too."""
        for base in bases:
            assert issubclass(error, base)

    @pytest.mark.parametrize(
        ("error", "not_a"),
        [
            (errors.ConfigurationError, TypeError),
            (errors.InvalidJobError, ValueError),
            (errors.LockNotAcquired, ValueError),
            (errors.LockLostError, RuntimeError),
            (errors.ConflictingJobError, errors.ConfigurationError),
            (errors.InvalidScheduleError, errors.ConflictingJobError),
        ],
    )
    def test_no_stray_bases(self, error: type[Exception], not_a: type[Exception]) -> None:
        """Errors do not inherit from branches of the tree they are not drawn under."""
        assert not issubclass(error, not_a)

    def test_root(self) -> None:
        """AsyncronError is an Exception, and every listed error derives from it."""
        assert issubclass(errors.AsyncronError, Exception)
        for name in errors.__all__:
            assert issubclass(getattr(errors, name), errors.AsyncronError), name

    def test_messages_name_field_and_value(self) -> None:
        """ConfigurationError and SchedulerStateError messages carry what went wrong."""
        exc = errors.ConfigurationError("max_threads", 0, "an integer >= 1")
        assert (exc.field, exc.value) == ("max_threads", 0)
        assert "max_threads=0" in str(exc)
        assert "an integer >= 1" in str(exc)
        state_error = errors.SchedulerStateError("start", asyncron.SchedulerState.SHUT_DOWN, "x")
        assert "shut_down" in str(state_error)
