"""`python -m civicpulse`: the `civicpulse` command (civicpulse.cli)."""

from civicpulse.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
