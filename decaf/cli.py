"""The ``decaf`` command. Each subcommand lives in ``decaf/commands/<name>.py``
and provides ``add_parser(subparsers)`` (returning its parser) and ``run(args)``; a module
there is a command, with no edit here."""
import argparse
import importlib
import sys

import pkgutil

from . import commands as _commands

# the order of `decaf --help`; any other module of decaf/commands follows, alphabetically, so a new
# command is one new module
_FIRST = ["classify", "extract", "transfer", "tsne", "profile", "train", "convert", "models",
          "gradcheck", "draw", "serve"]
_FOUND = sorted(m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_"))
COMMANDS = [c for c in _FIRST if c in _FOUND] + [c for c in _FOUND if c not in _FIRST]


def build_parser():
    parser = argparse.ArgumentParser(prog="decaf", description="decaf: CNNs on the CPU. "
                                     "Run 'decaf COMMAND --help' for a command's options and an example.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"decaf.commands.{name}")
        except ModuleNotFoundError as exc:   # a command not written yet: leave it out
            if exc.name == f"decaf.commands.{name}":
                continue
            raise
        p = module.add_parser(sub)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import decaf
        print(decaf.__version__)
        return 0
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError) as exc:
        # decaf's own errors (format, shape, spec) are ValueErrors with a message that says what is wrong;
        # an OSError (a full disk, a file-size limit, a directory where a file goes) is said in one line too
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else _os_message(exc)
        print(f"decaf {args.command}: error: {msg}", file=sys.stderr)
        return 1


def _os_message(exc):
    """One line for an OSError: its text and the file(s) it names (``str`` of an OSError made by
    decaf already says which file)."""
    if not isinstance(exc, OSError) or exc.strerror is None:
        return exc
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{files}: {exc.strerror}" if files else exc.strerror


if __name__ == "__main__":
    sys.exit(main())
