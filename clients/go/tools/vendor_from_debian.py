#!/usr/bin/env python3
"""Assemble clients/go/vendor from Debian's Go sources, so that the Go module builds offline.

clients/go is a real Go module (go.mod, import paths under its module path), but this
machine has no module proxy: its Go libraries are Debian packages under /usr/share/gocode
(GOPATH layout). `go build -mod=vendor` needs nothing else than vendor/, so this script:

1. lists the packages the module imports, transitively (`go list -deps` in GOPATH mode,
   with the module linked into a private GOPATH);
2. copies each non-standard package's Go files (no tests) from /usr/share/gocode into
   vendor/<import path>, with its module's licence files;
3. writes vendor/modules.txt for the modules of go.mod's `require` block (every one
   `## explicit`, as `go mod vendor` would), failing if a package belongs to no required
   module or a required module is not installed.

The versions in go.mod are the upstream releases of the Debian packages (what a consumer
with a module proxy fetches); the vendored code is Debian's copy of them.

    python clients/go/tools/vendor_from_debian.py [--gocode /usr/share/gocode]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GO_DIR = Path(__file__).resolve().parents[1]
LICENSES = ("LICENSE", "LICENSE.txt", "COPYING", "NOTICE", "PATENTS", "AUTHORS", "CONTRIBUTORS")


def parse_go_mod(text: str) -> tuple[str, dict[str, str]]:
    module = re.search(r"^module\s+(\S+)", text, re.M).group(1)
    requires: dict[str, str] = {}
    for block in re.findall(r"^require\s*\((.*?)^\)", text, re.M | re.S):
        for line in block.splitlines():
            parts = line.split("//")[0].split()
            if len(parts) == 2:
                requires[parts[0]] = parts[1]
    for path, version in re.findall(r"^require\s+([^\s(]+)\s+(\S+)", text, re.M):
        requires[path] = version
    return module, requires


def module_go_version(gocode: Path, module: str) -> str | None:
    go_mod = gocode / "src" / module / "go.mod"
    if go_mod.is_file():
        m = re.search(r"^go\s+(\S+)", go_mod.read_text(), re.M)
        return m.group(1) if m else None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gocode", default="/usr/share/gocode", type=Path)
    ap.add_argument("--go", default="go")
    args = ap.parse_args()
    module, requires = parse_go_mod((GO_DIR / "go.mod").read_text())
    vendor = GO_DIR / "vendor"
    # First: in GOPATH mode an existing vendor/ would resolve the imports to itself
    # (.../clients/go/vendor/...), and they would look like the module's own packages.
    shutil.rmtree(vendor, ignore_errors=True)

    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "src" / module
        link.parent.mkdir(parents=True)
        os.symlink(GO_DIR, link)
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{tmp}:{args.gocode}", "GOPROXY": "off",
               "GOFLAGS": "", "GOCACHE": os.environ.get("GOCACHE", str(Path(tmp) / "cache"))}
        # `...` does not follow the symlink: name the module's packages from its directories.
        packages = sorted({f"{module}/{p.parent.relative_to(GO_DIR)}".rstrip("/.")
                           for p in GO_DIR.rglob("*.go")
                           if "vendor" not in p.relative_to(GO_DIR).parts and not p.name.endswith("_test.go")})
        done = subprocess.run([args.go, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{.Dir}}{{end}}",
                               *packages], env=env, capture_output=True, text=True, cwd=link)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return 1

    deps = {}
    for line in done.stdout.splitlines():
        if line.strip():
            path, directory = line.split(" ", 1)
            if path != module and not path.startswith(module + "/"):
                deps[path] = Path(directory)

    if not deps:
        sys.stderr.write("vendor_from_debian: `go list -deps` found no dependencies\n")
        return 1
    by_module: dict[str, list[str]] = {m: [] for m in requires}
    for path, directory in sorted(deps.items()):
        owner = max((m for m in requires if path == m or path.startswith(m + "/")), key=len, default=None)
        if owner is None:
            sys.stderr.write(f"vendor_from_debian: {path} belongs to no module required by go.mod\n")
            return 1
        by_module[owner].append(path)
        target = vendor / path
        target.mkdir(parents=True, exist_ok=True)
        for f in directory.iterdir():
            if f.is_file() and (f.suffix in (".go", ".s", ".h", ".c") and not f.name.endswith("_test.go")):
                shutil.copy2(f, target / f.name)
    for owner in requires:
        root = args.gocode / "src" / owner
        if not root.is_dir():
            sys.stderr.write(f"vendor_from_debian: {owner} (go.mod) is not installed under {args.gocode}\n")
            return 1
        for name in LICENSES:
            if (root / name).is_file():
                (vendor / owner).mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, vendor / owner / name)

    lines = []
    for owner, version in sorted(requires.items()):
        go = module_go_version(args.gocode, owner)
        lines.append(f"# {owner} {version}")
        lines.append(f"## explicit; go {go}" if go else "## explicit")
        lines.extend(sorted(by_module[owner]))
    (vendor / "modules.txt").write_text("\n".join(lines) + "\n")
    print(f"vendored {len(deps)} packages of {len(requires)} modules into {vendor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
