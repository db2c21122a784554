#!/usr/bin/env python3
"""Checks the minimum supported Rust version (MSRV) without a second toolchain.

1. The README's "Needs a Rust toolchain (X or newer)" equals `rust-version` of
   every workspace crate.
2. No package of the lock graph (every platform) declares a higher
   `rust-version`: a dependency bump that needs a newer compiler fails here.
3. Std APIs newer than the MSRV are refused by clippy's `incompatible_msrv`
   lint, denied in `[workspace.lints]` and run by `cargo clippy` in CI.

Language features newer than the MSRV are not caught: only a build with that
toolchain would.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_PATTERN = re.compile(r"Needs a Rust toolchain \((\d+\.\d+(?:\.\d+)?) or newer\)")


def version(text):
    """'1.89' and '1.89.0' compare equal."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = README_PATTERN.findall(readme)
    if len(found) != 1:
        sys.exit("msrv: README.md must say the MSRV once: 'Needs a Rust toolchain (X or newer)'")
    msrv = found[0]

    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--locked", "--format-version", "1"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.PIPE,
        ).stdout
    )
    members = set(metadata["workspace_members"])
    errors = []
    for package in metadata["packages"]:
        declared = package.get("rust_version")
        name = f"{package['name']} {package['version']}"
        if package["id"] in members:
            if declared is None or version(declared) != version(msrv):
                errors.append(f"{name}: rust-version {declared}, README says {msrv}")
        elif declared is not None and version(declared) > version(msrv):
            errors.append(f"{name} needs Rust {declared}, above the MSRV {msrv}")
    if errors:
        sys.exit("msrv:\n  " + "\n  ".join(errors))
    print(f"msrv: {msrv} (README, {len(members)} crates, {len(metadata['packages'])} packages)")


if __name__ == "__main__":
    main()
