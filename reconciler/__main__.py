"""`python -m reconciler`: the same as the `reconcile` command."""

from reconciler.cli import main

raise SystemExit(main())
