"""Refill the code blocks of docs/backprop*.md that show real source.

A block preceded by ``<!-- code: PATH QUALNAME -->`` shows the source of QUALNAME in PATH;
tests/test_docs.py fails when it no longer matches. After changing such a function, re-read the
prose around it, then run

    python docs/scripts/sync_code_blocks.py          # rewrite the blocks from the source
    python docs/scripts/sync_code_blocks.py --check  # only report stale blocks (exit 1 if any)
"""
import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_docs import FENCE, MARKER, PAGES, live_source  # noqa: E402


def sync(page, check=False):
    lines = page.read_text().splitlines()
    out, stale, i = [], [], 0
    while i < len(lines):
        out.append(lines[i])
        m = MARKER.search(lines[i])
        if m and i + 1 < len(lines) and FENCE.match(lines[i + 1]):
            out.append(lines[i + 1])
            end = i + 2
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            live = live_source(m.group(1), m.group(2)).splitlines()
            if lines[i + 2:end] != live:
                stale.append(f"{page.name}:{i + 1} {m.group(2)}")
            out.extend(live)
            i = end
            continue
        i += 1
    if stale and not check:
        page.write_text("\n".join(out) + "\n")
    return stale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale blocks without rewriting")
    args = parser.parse_args(argv)
    stale = [s for page in PAGES for s in sync(page, args.check)]
    for s in stale:
        print(("stale: " if args.check else "updated: ") + s)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
