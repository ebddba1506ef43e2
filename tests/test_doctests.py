"""Every module's runnable examples, imported under its installed name.

pytest's ``--doctest-modules`` would import ``streams/app.py`` as the
top-level ``streams.app``, a second copy beside ``driftline.streams.app``;
walking the installed package runs each example exactly once, where users
import it from.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest


# The services' folders sit beside driftline/, mapped into it at install
# time, so a walk of driftline/ alone does not reach them.
PACKAGES = ("driftline", "driftline.streams", "driftline.retrain", "driftline.registry")


def _runs(example: doctest.Example) -> bool:
    return not example.options.get(doctest.SKIP)


def _modules_with_examples() -> list[str]:
    names: set[str] = set()
    finder = doctest.DocTestFinder()
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        candidates = [package_name] + [info.name for info in pkgutil.walk_packages(package.__path__, prefix=package_name + ".")]
        for name in candidates:
            if name.rsplit(".", 1)[-1] == "__main__":
                continue  # running it would start the program
            if any(_runs(example) for test in finder.find(importlib.import_module(name)) for example in test.examples):
                names.add(name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_services_examples_are_found():
    # the walk reaches the services installed inside driftline
    for package in ("driftline.streams", "driftline.retrain", "driftline.registry"):
        assert any(name.startswith(package + ".") for name in MODULES), package


@pytest.mark.parametrize("module_name", MODULES)
def test_examples(module_name):
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name} (output above)"
