"""`python -m mtl train|eval|predict ...`: the same as the `mtl` command."""
from mtl.cli import main

raise SystemExit(main())
