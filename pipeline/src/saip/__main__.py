"""``python -m saip`` runs the CLI."""

from saip.cli import main

raise SystemExit(main())
