"""``python -m signet.kms.emulator``."""

import sys

from signet.kms.emulator.cli import main

sys.exit(main())
