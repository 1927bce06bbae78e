"""``python -m dslrec ...`` (and ``torchrun --nproc-per-node N -m dslrec train ...``): the command line."""

import sys

from dslrec.cli import main

sys.exit(main())
