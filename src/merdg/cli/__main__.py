"""``python -m merdg.cli ...`` (e.g. under ``torchrun -m merdg.cli train ...``)."""

import sys

from merdg.cli import console

sys.exit(console())
