"""``python -m driftline.retrain [worker options]``: the retraining daemon."""

import sys

from driftline.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
