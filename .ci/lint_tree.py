"""Lay out the ``adaptd`` namespace as static tools see packages: one folder per package.

pyproject maps the repository's top-level folders into ``adaptd.*`` (setuptools
``package-dir``), which installs correctly but is invisible to tools that read packages
from the file system (import-linter's grimp, mypy). This script mirrors that mapping in
``build/lint/adaptd`` with a symlink per source file, so those tools check the real files
under their installed names. Run it before them; it is idempotent and takes milliseconds.

usage: python .ci/lint_tree.py [OUT]   (default: build/lint); prints OUT.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(out: Path) -> Path:
    """Recreate ``out/adaptd`` from pyproject's package-dir and packages; return ``out``."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = config["package-dir"]
    shutil.rmtree(out / "adaptd", ignore_errors=True)
    for package in config["packages"]:
        source = _source_dir(package, package_dir)
        target = out.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and path.suffix in {".py", ".typed"}:
                (target / path.name).symlink_to(path)
    return out


def _source_dir(package: str, package_dir: dict[str, str]) -> Path:
    """The folder of ``package``: its longest mapped ancestor's folder plus the rest."""
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        mapped = package_dir.get(".".join(parts[:i]))
        if mapped is not None:
            return REPO.joinpath(mapped, *parts[i:])
    raise SystemExit(f"{package} has no folder in [tool.setuptools] package-dir")


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "lint"))
