"""``python -m driftline.registry ...`` is ``driftline registry ...``."""

import sys

from driftline.cli import main

sys.exit(main(["registry", *sys.argv[1:]]))
