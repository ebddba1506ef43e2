"""``driftline demo``: the whole loop on a drifting benchmark stream, live.

What happens, in order (one process orchestrates, the daemons are separate
OS processes in their own process groups):

1. start the embedded broker (tansu) and create the topics;
2. store the demo policy and train version 1 of model ``agrawal`` on
   River's Agrawal generator, classification function 0 [1]_;
3. start ``driftline monitor`` and ``driftline worker``;
4. replay the stream through :class:`~driftline.champion.Champion`, which
   loads ``agrawal@champion`` from the registry, publishes every
   prediction and swaps to the new version when a promotion arrives; labels
   follow one second later. Half-way the concept drifts: the
   labels switch to Agrawal's classification function 2, so version 1 falls
   to about coin-flip accuracy;
5. show live metrics, the drift alert, the retrain request, the promotion
   and the recovery; print a summary and write ``demo-report/index.html``.

Every child process is killed (process group, SIGTERM then SIGKILL) in a
``finally``, so Ctrl-C leaves nothing behind.

The demo is the one part of Driftline that composes all three services; the
core (the rest of ``driftline/``) imports none of them. Its modules:
``stream`` (the data and the policy), ``processes`` (the daemons and their
``/metrics``), ``watch`` (following the output topics), ``serving`` (the
application), ``view`` (the terminal), ``report`` (summary and HTML report)
and ``run`` (:func:`run_demo`).

References
----------
.. [1] Agrawal, R., Imielinski, T. and Swami, A. (1993). Database mining: A
   performance perspective. IEEE Transactions on Knowledge and Data
   Engineering, 5(6), 914-925.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_MODEL", "DEMO_POLICY", "DemoError", "agrawal_rows", "agrawal_frame", "Daemon", "run_demo",
           "scrape_metrics", "FEATURES", "describe_policy_change"]

# name -> the module defining it; imported on first use, so loading the
# ``demo`` sub-command (driftline.demo.cli) stays cheap for every command.
_HOMES = {"DEMO_MODEL": "stream", "DEMO_POLICY": "stream", "FEATURES": "stream", "agrawal_rows": "stream",
          "agrawal_frame": "stream", "DemoError": "errors", "Daemon": "processes", "scrape_metrics": "processes",
          "run_demo": "run", "describe_policy_change": "watch"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
