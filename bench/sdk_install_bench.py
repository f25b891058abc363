"""The SDK-only install beside its peers: size on disk, packages pulled in, import time.

Each candidate is installed into a fresh venv of its own (PyPI, as a user would); adaptd
is installed from a wheel of this checkout without extras (`pip install adaptd`). Size is
site-packages minus what a bare venv already holds (pip, setuptools). Import time is the
wall time of a fresh `python -c STATEMENT` minus that of `python -c pass`, median over
``--runs`` interleaved runs, so each statement's first use is counted too.

    python bench/sdk_install_bench.py [--runs 15] [--workdir /tmp/sdk-bench]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: name -> (pip requirement, import statement a user's first emit needs)
CANDIDATES = {
    "adaptd (SDK only)": (None, "import adaptd; adaptd.configure; adaptd.emit"),
    "opentelemetry-sdk": ("opentelemetry-sdk", "import opentelemetry.sdk.trace, opentelemetry.sdk.trace.export"),
    "langfuse": ("langfuse", "import langfuse; langfuse.Langfuse"),
}


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _install(venv: Path, requirement: str | None, wheel: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "--quiet", requirement or str(wheel)])


def _import_s(python: Path, statement: str) -> float:
    start = time.perf_counter()
    _run([str(python), "-c", statement])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sdk-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    wheel_dir = args.workdir / "wheel"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO), "-w", str(wheel_dir)])
    [wheel] = wheel_dir.glob("adaptd-*.whl")

    bare = args.workdir / "bare"
    _install(bare, "pip", wheel)  # a venv with nothing but pip and setuptools
    bare_size = _du(_site(bare))
    bare_pkgs = len(_run([str(bare / "bin" / "pip"), "list", "--format=freeze"]).stdout.split())

    venvs = {}
    for name, (requirement, _) in CANDIDATES.items():
        venv = args.workdir / name.split()[0]
        _install(venv, requirement, wheel)
        venvs[name] = venv

    times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for _ in range(args.runs):
        base = _import_s(bare / "bin" / "python", "pass")
        for name, (_, statement) in CANDIDATES.items():
            times[name].append(_import_s(venvs[name] / "bin" / "python", statement) - base)

    print(f"| package | installed size | packages | import + first use (median of {args.runs}) |")
    print("|---|---|---|---|")
    for name, venv in venvs.items():
        size = (_du(_site(venv)) - bare_size) / 1e6
        pkgs = len(_run([str(venv / "bin" / "pip"), "list", "--format=freeze"]).stdout.split()) - bare_pkgs
        print(f"| {name} | {size:.1f} MB | {pkgs} | {statistics.median(times[name]) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
