"""Optional parts of Driftline and the package extra that installs each.

``pip install driftline`` gives the core, the monitor, the worker and the
registry on SQLite; the rest comes with an extra (pyproject.toml):

==============  ==========================================  ======================
extra           packages                                    needed by
==============  ==========================================  ======================
``postgres``    psycopg                                     a PostgreSQL registry
``serve``       starlette, uvicorn                          ``driftline serve``
``report``      matplotlib                                  ``driftline report``
``demo``        matplotlib                                  ``driftline demo``
==============  ==========================================  ======================

:func:`require` imports an optional package or says which extra to install;
:func:`error_types` gives an optional package's exception types for an
``except`` clause (none when it is not installed: nothing can raise them).

Examples
--------
>>> require("json", "serve").__name__
'json'
>>> error_types("json", "JSONDecodeError"), error_types("no_such_package_here", "Error")
((<class 'json.decoder.JSONDecodeError'>,), ())
>>> require("no_such_package_here", "serve", "driftline serve")
Traceback (most recent call last):
...
driftline.extras.MissingExtraError: driftline serve needs no_such_package_here, which is not installed: pip install 'driftline[serve]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import DriftlineError

__all__ = ["MissingExtraError", "require", "error_types"]


class MissingExtraError(DriftlineError, ImportError):
    """An optional package is not installed; the message names the extra."""


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module``; when it is missing raise :class:`MissingExtraError`
    naming the extra that installs it.

    Parameters
    ----------
    module
        The module to import (``"starlette.routing"``).
    extra
        The extra of ``driftline`` that installs it.
    feature
        What needs it, for the message (default: ``this feature``).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or not module.startswith(error.name):  # broken inside the package itself
            raise
        raise MissingExtraError(f"{feature or 'this feature'} needs {error.name}, which is not installed: "
                                f"pip install 'driftline[{extra}]'") from None


def error_types(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The exception classes ``names`` of the optional package ``module``,
    or ``()`` when it is not installed.

    >>> try:
    ...     pass
    ... except (OSError, *error_types("psycopg", "OperationalError")):  # a SQLite-only install too
    ...     pass
    """
    try:
        package = importlib.import_module(module)
    except ModuleNotFoundError:
        return ()
    return tuple(getattr(package, name) for name in names)
