"""``python -m driftline.streams``: the same as ``driftline monitor``."""

import sys

from driftline.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(["monitor", *sys.argv[1:]]))
