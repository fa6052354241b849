"""Classes a module defines on first use, so that importing it stays light (PEP 562 module __getattr__).

ladder.judge.classifier's torch modules and ladder.training.trainer's transformers callbacks subclass what torch and transformers
define; defining them at import would load those libraries with the module and make every stage's --help wait.
"""
from __future__ import annotations

from typing import Callable


def lazy_classes(module: str, names: tuple[str, ...], build: Callable[[], dict[str, type]]):
    """A module `__getattr__` that answers `names` from `build()`, which must be cached (functools.cache: each class
    defined once, so isinstance holds across calls); any other name is an AttributeError without building, so
    introspection never imports the heavy library."""

    def __getattr__(name: str) -> type:
        if name in names:
            return build()[name]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
