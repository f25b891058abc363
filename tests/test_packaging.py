"""What `pip install adaptd` puts into site-packages: one `adaptd` namespace, nothing else.

The wheel is built from this checkout as pip builds it for a user (build isolation), then
read as a zip: the file list is exactly what an install writes.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Import names of other PyPI projects that adaptd's folders are named like
#: (python-daemon's `adaptd.daemon`, AdapterHub's `adaptd.adapters`, the `adaptd.tui` project...).
TAKEN = {"daemon", "streams", "adapters", "tui"}


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO), "-w", str(out)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = out.glob("adaptd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_installs_only_the_adaptd_namespace(wheel_files: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"adaptd"}
    assert not {name.split("/")[0] for name in wheel_files} & TAKEN


def test_the_wheel_holds_each_folder_under_its_adaptd_name(wheel_files: list[str]) -> None:
    for path in ("adaptd/__init__.py", "adaptd/py.typed", "adaptd/adapters/client.py",
                 "adaptd/daemon/cli/entry.py", "adaptd/streams/events.py", "adaptd/tui/app.py"):
        assert path in wheel_files, path
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in wheel_files)


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A new subpackage left out of pyproject's list would be missing from the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, dotted in (("adapters", "adaptd.adapters"), ("daemon", "adaptd.daemon"),
                        ("streams", "adaptd.streams"), ("tui", "adaptd.tui")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            if "__pycache__" in rel.parts or rel.parts[:1] == ("_root",):
                continue
            found.add(".".join([dotted, *rel.parts]))
    assert found | {"adaptd"} == listed


def test_python_daemon_and_adaptd_share_site_packages(wheel_files: list[str], tmp_path: Path) -> None:
    """python-daemon installs a top-level `adaptd.daemon`: adaptd's files never overwrite it.

    Checked on the file lists, so it needs no network: every path python-daemon's wheel
    writes lies under `daemon/` or its dist-info, and adaptd writes nothing there.
    """
    assert not [name for name in wheel_files if name.startswith(("daemon/", "python_daemon"))]


def test_the_sdk_alone_imports_without_daemon_dependencies() -> None:
    code = ("import adaptd, sys; adaptd.configure; adaptd.emit; adaptd.observe; "
            "heavy = {'duckdb', 'fastapi', 'uvicorn', 'scipy', 'sklearn', 'numpy', 'textual', 'pyarrow'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "[]"
