"""The `adaptd` script names the extra to install before anything heavy is imported."""

from __future__ import annotations

import pytest

import adaptd
import adaptd.adapters
from adaptd.daemon.cli import entry


def test_a_missing_module_is_named_and_a_present_one_is_not() -> None:
    assert entry.missing_modules(("json", "no_such_module_xyz", "no_such_pkg_xyz.sub")) == [
        "no_such_module_xyz", "no_such_pkg_xyz.sub"]


@pytest.mark.parametrize(("argv", "extra"), [(["up"], "daemon"), (["dash"], "tui"), ([], "daemon")])
def test_a_command_whose_extra_is_missing_exits_2_naming_the_pip_install(
    argv: list[str], extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(entry.EXTRAS, extra, ("no_such_module_xyz",))
    with pytest.raises(SystemExit) as stopped:
        entry.main(argv)
    assert stopped.value.code == 2
    assert f"pip install 'adaptd[{extra}]'" in capsys.readouterr().err


def test_the_root_package_serves_exactly_the_sdks_public_names() -> None:
    """`adaptd.__all__` is written out (to stay lazy); it must match the SDK's own list."""
    assert set(adaptd.__all__) == set(adaptd.adapters.__all__)
    assert all(getattr(adaptd, name) is getattr(adaptd.adapters, name) for name in adaptd.__all__)
