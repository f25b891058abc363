"""The README runs as written: every fenced ``sh``/``bash``, ``python`` and ``toml`` block
is extracted from README.md and run against one real daemon (a subprocess on a free
port, started once for the module).

How a block is run, and the only rewrites applied to it:

- Shell blocks run with ``bash -e -o pipefail`` in a scratch directory, so every command
  must exit 0. ``localhost:7710`` / ``127.0.0.1:7710`` become the test daemon's address
  (and ``ADAPTD_URL`` is set to it); ``.venv/bin/adaptd`` becomes this interpreter's
  ``adaptd`` script; ``curl -s`` becomes ``curl -sS --fail-with-body`` so an HTTP error
  fails the block instead of printing a body; ``--data-dir .adaptd`` becomes the test
  daemon's data dir and ``/tmp/`` the scratch directory.
- Python blocks run in README order in one namespace (a reader pasting them into one
  session), in a subprocess, with the same address rewrite; ``dspy.LM("...")`` becomes a
  ``dspy.utils.DummyLM`` that answers every ChainOfThought call (no network, no key).
- TOML blocks are written to a file and loaded by ``adaptd.daemon.config.load_settings``.

Blocks that cannot run in a test are in ``SKIP`` below, each with its reason; every key
must match exactly one block, so a stale entry fails too. The daemon's read model is
waited for (projector caught up) before each shell block, as a reader's pause would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import REPO, DaemonProcess, wait_until
from dash_workload import CONFIG as ROUTING_QA

README = REPO / "README.md"

#: Blocks that cannot run in a test, by a string only that block holds: the reason.
SKIP: dict[str, str] = {
    "make demo": "make targets create a venv and start long-running demos / the foreground daemon",
    "pip install adaptd": "installs packages from PyPI",
    "adaptd demo --headless": "the demo runs for a minute or more and opens the dashboard without --headless",
    "adaptd backtest": "a synopsis with [optional] parts; needs a recorded route_decision history",
    "adaptd optimize qa --auto-select": "needs an [[optimize]] program (factory, metric, LM) and runs optimizer jobs",
    "adaptd up --log kafka://": "Kafka mode needs a broker",
}

#: Single commands inside runnable blocks that never end by themselves: the reason.
SKIP_LINES: dict[str, str] = {
    "adaptd tail": "follows the live stream until Ctrl+C",
}

#: The config of the test daemon: ``qa`` with the routes the README's routing examples name.
CONFIG = ROUTING_QA + '[[routing.routes]]\nname = "new-model"\nmodel = "openai/gpt-4.1-mini"\n'

DUMMY_LM = 'dspy.utils.DummyLM([{"reasoning": "It is known.", "answer": "Paris"}] * 20)'

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w+)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    line: int
    text: str

    @property
    def name(self) -> str:
        return f"{self.lang}@README.md:{self.line}"


def readme_blocks() -> list[Block]:
    """The fenced blocks of README.md in order (indented fences too, dedented); [] if none."""
    text = README.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        lang = {"bash": "sh"}.get(m["lang"], m["lang"])
        body = textwrap.dedent(m["body"])
        blocks.append(Block(lang, text.count("\n", 0, m.start()) + 1, body))
    return blocks


def skip_reason(block: Block) -> str | None:
    """The SKIP reason of ``block``, or None when it runs."""
    return next((why for key, why in SKIP.items() if key in block.text), None)


BLOCKS = readme_blocks()
SHELL = [b for b in BLOCKS if b.lang == "sh"]
PYTHON = [b for b in BLOCKS if b.lang == "python"]
TOML = [b for b in BLOCKS if b.lang == "toml"]


def address(text: str, url: str) -> str:
    """``text`` with the README's daemon address replaced by ``url`` (``http://host:port``)."""
    hostport = url.removeprefix("http://")
    return text.replace("localhost:7710", hostport).replace("127.0.0.1:7710", hostport)


def shell_script(block: Block, url: str, data_dir: Path, scratch: Path) -> str:
    """The block as the test runs it (see the module docstring for every rewrite)."""
    adaptd_bin = Path(sys.executable).parent / "adaptd"
    lines = []
    for ln in block.text.splitlines():
        if any(key in ln for key in SKIP_LINES):
            continue
        # README paths first: the paths put in below may themselves lie under /tmp/
        ln = ln.replace("/tmp/", f"{scratch}/").replace("--data-dir .adaptd", f"--data-dir {data_dir}")
        ln = address(ln, url).replace(".venv/bin/adaptd", str(adaptd_bin))
        ln = ln.replace("curl -s ", "curl -sS --fail-with-body ")
        lines.append(ln)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("readme")
    d = DaemonProcess(root / "data", config_text=CONFIG)
    d.start()
    yield d
    d.stop()


def caught_up(url: str) -> bool:
    stats = httpx.get(f"{url}/v1/stats", timeout=5).json()
    return stats["projector_lag"] == 0 if stats["scope"] == "global" else bool(stats["caught_up"])


def test_every_skip_entry_names_exactly_one_block() -> None:
    for key in SKIP:
        hits = [b.name for b in BLOCKS if key in b.text]
        assert len(hits) == 1, f"SKIP key {key!r} matches {hits}"
    for key in SKIP_LINES:
        assert any(key in b.text for b in SHELL if not skip_reason(b)), f"SKIP_LINES key {key!r} matches no line"
    assert SHELL and PYTHON and TOML, "README has no blocks of some language: the extractor is broken"
    unrun = [b.name for b in BLOCKS if b.lang not in ("sh", "python", "toml")]
    assert not unrun, f"blocks in a language this test does not run: {unrun}"


RUNNER = """
import json, sys
ns = {"__name__": "__readme__"}
for line, src in json.load(sys.stdin):
    print(f"--- README.md:{line}", flush=True)
    exec(compile(src, f"README.md:{line}", "exec"), ns)
import adaptd
assert adaptd.flush(timeout=10), "the SDK could not deliver the README's events"
print(json.dumps(adaptd.stats()))
"""


def python_source(block: Block, url: str) -> str:
    """The block as the test runs it: the daemon's address, and a DummyLM for ``dspy.LM("...")``."""
    return re.sub(r'dspy\.LM\(\s*"[^"]*"\s*\)', DUMMY_LM, address(block.text, url))


def test_readme_python_blocks_run_in_order(daemon: DaemonProcess, tmp_path: Path) -> None:
    blocks = [(b.line, python_source(b, daemon.url)) for b in PYTHON if not skip_reason(b)]

    def feedback() -> list[dict]:
        page = httpx.get(f"{daemon.url}/v1/feedback", params={"limit": 1000}, timeout=5)
        page.raise_for_status()
        return list(page.json()["items"])

    before = len(feedback())
    env = {**os.environ, "ADAPTD_URL": daemon.url}
    env.pop("ADAPTD_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    sdk = json.loads(done.stdout.strip().splitlines()[-1])
    # every event the blocks made was valid and acknowledged (a placeholder id is dropped as invalid)
    lost = {k: v for k, v in sdk.items() if (k.startswith("dropped") or k == "rejected") and v}
    assert not lost and sdk["exported"] > 0, sdk

    # the SDK and DSPy examples each send feedback on the execution they ran: both arrive
    new = wait_until(lambda: (rows := feedback()) and len(rows) >= before + 2 and rows, timeout=20)
    for row in new:  # ... on an execution the daemon holds
        tree = httpx.get(f"{daemon.url}/v1/executions/{row['execution_id']}/tree", timeout=5)
        assert tree.status_code == 200, (row, tree.text)


@pytest.mark.parametrize("block", SHELL, ids=[b.name for b in SHELL])
def test_readme_shell_block_exits_0(block: Block, daemon: DaemonProcess, tmp_path: Path) -> None:
    if (why := skip_reason(block)) is not None:
        pytest.skip(why)
    wait_until(lambda: caught_up(daemon.url), timeout=20)
    script = shell_script(block, daemon.url, daemon.data_dir, tmp_path)
    env = {**os.environ, "ADAPTD_URL": daemon.url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("ADAPTD_TOKEN", None)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{block.name} exited {done.returncode}\n--- script\n{script}\n--- stdout\n" \
                                 f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", TOML, ids=[b.name for b in TOML])
def test_readme_toml_block_is_valid_config(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptd.daemon.config import load_settings

    for key in [k for k in os.environ if k.startswith("ADAPTD_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "adaptd.toml"
    path.write_text(block.text)
    monkeypatch.setenv("ADAPTD_CONFIG", str(path))  # load_settings sets it; monkeypatch restores it
    settings = load_settings(path, data_dir=tmp_path / "data")
    first_table = re.search(r"^\[+([\w.]+)\]+", block.text, re.M)
    assert first_table is not None, f"{block.name}: no table"
    assert getattr(settings, first_table[1].split(".")[0]) is not None
