"""``python -m driftline.streams`` with one injected failure, for tests/test_monitor_faults.py.

``DRIFTLINE_TEST_FAULT=METHOD:N`` makes the N-th call of ``METHOD`` (a
coroutine method of ``MonitorApp`` or of its stage 1, ``JoinStage``) raise
``RuntimeError`` — an error that is not about one message, as a bug or a lost
resource would raise.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from driftline.streams import app, stage1

    method, _, nth = os.environ["DRIFTLINE_TEST_FAULT"].partition(":")
    owner = next(cls for cls in (app.MonitorApp, stage1.JoinStage) if hasattr(cls, method))
    original = getattr(owner, method)
    calls = {"n": 0}

    async def faulty(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= int(nth or 1):
            raise RuntimeError(f"injected fault in {method}")
        return await original(self, *args, **kwargs)

    setattr(owner, method, faulty)
    from driftline.cli import main as driftline_main

    return driftline_main(["monitor", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
