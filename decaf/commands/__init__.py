"""One module per ``decaf`` subcommand (see decaf/cli.py)."""
