"""The error tree drawn in ``carrierfeeds.errors``' docstring names every subclass, under its own parent."""

from __future__ import annotations

import importlib
import pkgutil
import re

import carrierfeeds
from carrierfeeds import errors
from carrierfeeds.errors import CarrierFeedsError

_BRANCH = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>[\w.]+)")


def _label(cls: type) -> str:
    """How the drawing names a class: bare in errors.py, else by module path under carrierfeeds."""
    module = cls.__module__.removeprefix("carrierfeeds.")
    return cls.__qualname__ if module == "errors" else f"{module}.{cls.__qualname__}"


def _every_subclass() -> dict[str, str]:
    """Every CarrierFeedsError subclass in the package, by label, with its parent's label."""
    for info in pkgutil.walk_packages(carrierfeeds.__path__, "carrierfeeds."):
        importlib.import_module(info.name)
    found: dict[str, str] = {}
    todo: list[type] = [CarrierFeedsError]
    while todo:
        parent = todo.pop()
        for child in parent.__subclasses__():
            if child.__module__.startswith("carrierfeeds."):
                found[_label(child)] = _label(parent)
                todo.append(child)
    return found


def _drawn() -> dict[str, str]:
    """The drawing's classes, each with the class on the nearest line above drawn one level out."""
    lines = (errors.__doc__ or "").splitlines()
    root = next(line.split()[0] for line in lines if line.strip().startswith("CarrierFeedsError"))
    stack: list[tuple[int, str]] = [(-1, root)]
    drawn: dict[str, str] = {}
    for line in lines:
        match = _BRANCH.match(line.strip("\n").removeprefix("    "))
        if not match:
            continue
        depth = len(match["indent"]) // 4
        while stack[-1][0] >= depth:
            stack.pop()
        drawn[match["name"]] = stack[-1][1]
        stack.append((depth, match["name"]))
    return drawn


def test_every_subclass_is_drawn_under_its_parent() -> None:
    actual = _every_subclass()
    drawn = _drawn()
    assert {name: parent for name, parent in actual.items() if drawn.get(name) != parent} == {}


def test_the_drawing_names_only_classes_that_exist() -> None:
    assert set(_drawn()) - set(_every_subclass()) == set()
