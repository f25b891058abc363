"""``python -m adaptd.daemon.demo`` (what ``adaptd demo`` runs): start the world, tell the story.

Headless: prints each signal, routing change and optimization step as it happens, then a
verdict per episode; exits 0 when every episode was detected (and acted on where an
action is expected), 1 otherwise, 2 when the world could not start. Otherwise: opens the
dashboard on the demo's daemon while the story plays, and stops everything when the
dashboard is closed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map

from adaptd.daemon.demo import narrator, story
from adaptd.daemon.demo.world import World

#: After the scripted duration, how long the headless run waits for late verdicts.
GRACE_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptd demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--headless", action="store_true", help="print the story instead of opening the dashboard")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds the scripted story lasts")
    parser.add_argument("--dir", help="keep the daemon's data and log here (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.duration < 30:
        parser.error("--duration must be at least 30 seconds (the story needs a few drift windows)")
    warnings.filterwarnings("ignore")
    episodes = story.episodes(args.duration)
    print(f"adaptd demo: {args.duration:.0f} s story, episodes:", flush=True)
    for e in episodes:
        end = f"{e.end_s:.0f} s" if e.end_s is not None else "the end"
        print(f"  {e.start_s:5.0f} s - {end:>7}  {e.name}: {e.what}", flush=True)
    try:
        world = World(args.duration, workdir=None if args.dir is None else __import__("pathlib").Path(args.dir),
                      seed=args.seed).__enter__()
    except (RuntimeError, OSError) as exc:
        print(f"adaptd demo: error: could not start the demo: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"daemon at {world.daemon.url} (data in {world.dir})", flush=True)
        if not args.headless:
            return _dashboard(world)
        return _headless(world, episodes, args.duration)
    finally:
        world.__exit__()


def _headless(world: World, episodes: list[story.Episode], duration_s: float) -> int:
    poller = narrator.Poller(world.daemon.url, list(story.ROUTES), world.wall_t0, emit=lambda s: print(s, flush=True))
    deadline = world.t0 + duration_s
    try:
        while True:
            poller.poll()
            now = time.monotonic()
            verdicts = narrator.judge(episodes, poller.obs, world.wall_t0)
            if now >= deadline and (narrator.complete(verdicts) or now >= deadline + GRACE_S):
                break
            time.sleep(0.5)  # the pace of the narration
    finally:
        poller.close()
    print("\nwhat adaptd did:", flush=True)
    for line in narrator.verdict_lines(verdicts):
        print("  " + line, flush=True)
    summary = world.summary()
    print(f"calls: {summary['calls']}; calls that failed over every route: {summary['errors']}", flush=True)
    ok = narrator.complete(verdicts)
    print("story complete" if ok else "story INCOMPLETE: see the lines above", flush=True)
    return 0 if ok else 1


def _dashboard(world: World) -> int:
    """Run ``adaptd dash`` on the demo's daemon in this terminal until it is closed."""
    cmd = [sys.executable, "-m", "adaptd.daemon.cli", "dash", "--url", world.daemon.url]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
