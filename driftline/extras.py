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

:func:`require` imports an optional package or says which extra to install.

Examples
--------
>>> require("json", "serve").__name__
'json'
>>> require("no_such_package_here", "serve", "driftline serve")
Traceback (most recent call last):
...
driftline.extras.MissingExtraError: driftline serve needs no_such_package_here, which is not installed: pip install 'driftline[serve]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import DriftlineError

__all__ = ["MissingExtraError", "require"]


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
