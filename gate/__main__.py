"""``python -m gate`` (and ``accelerate launch -m gate check ...``): the same as the ``gate`` command."""

from gate.cli import main

raise SystemExit(main())
