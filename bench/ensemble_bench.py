"""Optimizer ensemble vs the single recommended optimizer, on three small offline DSPy tasks.

Per task and seed, the examples are split three ways, disjoint: ``train`` (what the
optimizers learn from), ``dev`` (scored before / after by the runner; the ensemble keeps
the member best on it) and ``held-out`` (scored only here, after the choice: the figure
that says whether choosing on the devset generalised).  Both arms use the daemon's own
pieces, in process: ``recommend`` (single: the recommended optimizer with the whole
budget), ``plan_ensemble`` / ``choose`` (ensemble: the top-k that fit, each with its
ceiling), ``run_optimization`` with a ``Budget`` per run.  No learning between runs:
every seed starts from the rule priors, so the arms are independent of run order.

Tasks (every LM a scripted ``DummyLM``; no provider; a call costs $0.0001):

- ``sums``: ``adaptd.daemon.demo.toy`` (``"3 + 4 = ?"``; the LM is right only with an
  example of that format in the prompt, else ~30% by luck).
- ``units``: ``"convert 7 km to m"`` over 8 unit pairs; the LM knows a pair's factor only
  when a demo of the same pair is in the prompt (else right ~25% by luck), so which
  demos an optimizer picks matters.
- ``labels``: classify ``"<adjective> <word>"`` into one of 6 categories named by arbitrary codes
  (``C1``..``C6``); the LM knows a word's category but not its code, and takes the code
  most demos of the same category carry (a guess without one).  25% of the train and
  dev labels are wrong (as harvested examples can be); held-out labels are right.

The cost is the LM calls the optimization spent (baseline and final devset scoring
included; the held-out scoring is not counted: it is the measurement).

Usage: ``python bench/ensemble_bench.py [--seeds 3] [--k 3] [--budget 1000] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy

from adaptd.daemon.demo import toy
from adaptd.daemon.optimize.budget import Budget
from adaptd.daemon.optimize.ensemble import choose, plan_ensemble
from adaptd.daemon.optimize.recommend import Situation, missing_packages, recommend
from adaptd.daemon.optimize.runner import RunResult, load_program, run_optimization, score, to_dspy
from adaptd.daemon.optimize.settings import OptimizeProgram

SEED_ENV = "ADAPTD_ENSEMBLE_BENCH_SEED"  # the LM factories are zero-argument import paths
_ANSWER = re.compile(r"\[\[ ## answer ## \]\]\s*\n(.*?)(?:\n\n|\Z)", re.S)

UNITS = [("km", "m", 1000), ("kg", "g", 1000), ("h", "min", 60), ("ft", "in", 12), ("lb", "oz", 16),
         ("day", "h", 24), ("yd", "ft", 3), ("min", "s", 60)]
WORDS = {"C1": "cat dog horse cow sheep goat fox wolf", "C2": "apple pear plum grape lemon mango peach kiwi",
         "C3": "hammer saw drill wrench chisel pliers rake spade",
         "C4": "red blue green yellow purple orange pink brown",
         "C5": "car bus truck train bicycle tram ferry scooter",
         "C6": "violin piano flute drum guitar cello harp trumpet"}
ADJECTIVES = ("small", "big", "old", "new", "cheap", "dear", "fast", "slow")
CATEGORY = {w: code for code, words in WORDS.items() for w in words.split()}


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


class TaskLM(toy.ToyLM):
    """A scripted LM for one task: ``answer(question, demos, rng)`` decides each reply from
    the question and the demos (question, answer) in the prompt."""

    def __init__(self, answer: Callable[[str, list[tuple[str, str]], random.Random], str], seed: int) -> None:
        super().__init__(seed=seed)
        self.answer = answer

    def _use_example(self, messages: list[dict[str, Any]]) -> str:
        self.calls += 1
        m = toy._QUESTION.search(messages[-1].get("content") or "")
        question = m.group(1).strip() if m else ""
        demos: list[tuple[str, str]] = []
        for user, reply in zip(messages[:-1], messages[1:-1], strict=False):
            q = toy._QUESTION.search(user.get("content") or "") if user.get("role") == "user" else None
            a = _ANSWER.search(reply.get("content") or "") if reply.get("role") == "assistant" else None
            if q and a:
                demos.append((q.group(1).strip(), a.group(1).strip()))
        answer = self.answer(question, demos, self.rng)
        fields = toy._OUTPUTS.findall(toy._section(messages[0].get("content") or "")) or ["answer"]
        return self._format_answer_fields({f: answer if f == "answer" else "Follow the examples." for f in fields})


# ------------------------------------------------------------------------------------ tasks


def _unit_pair(question: str) -> tuple[int, str] | None:
    m = re.match(r"^convert (\d+) (\w+) to (\w+)$", question)
    return (int(m.group(1)), f"{m.group(2)}>{m.group(3)}") if m else None


def units_answer(question: str, demos: list[tuple[str, str]], rng: random.Random) -> str:
    got = _unit_pair(question)
    if got is None:
        return "?"
    n, pair = got
    factor = {p: f for a, b, f in UNITS for p in [f"{a}>{b}"]}[pair]
    seen = any((_unit_pair(q) or (0, ""))[1] == pair for q, _ in demos)
    right = (seen and _unit("u:" + question) >= 0.03) or (not seen and rng.random() < 0.25)
    return str(n * factor if right else n * factor + 1 + int(_unit(question) * 9))


def labels_answer(question: str, demos: list[tuple[str, str]], rng: random.Random) -> str:
    word = question.split()[-1] if question.startswith("classify ") else ""
    if word not in CATEGORY:
        return "?"
    same = [a for q, a in demos if CATEGORY.get(q.split()[-1]) == CATEGORY[word]]
    if same:  # the code most same-category demos carry (ties: the first seen)
        return Counter(same).most_common(1)[0][0]
    return rng.choice(sorted(WORDS))


def sums_lm() -> dspy.BaseLM:
    return toy.ToyLM(seed=int(os.environ.get(SEED_ENV, "0")))


def units_lm() -> dspy.BaseLM:
    return TaskLM(units_answer, int(os.environ.get(SEED_ENV, "0")))


def labels_lm() -> dspy.BaseLM:
    return TaskLM(labels_answer, int(os.environ.get(SEED_ENV, "0")))


def _examples(task: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct examples of ``task`` (right labels), deterministic in ``seed``."""
    rng = random.Random(f"{task}:{seed}")
    if task == "sums":
        return [toy.example_line(q) for q in toy.questions("symbols", n, seed)]
    out, seen = [], set()
    while len(out) < n:
        if task == "units":
            a, b, f = rng.choice(UNITS)
            k = rng.randint(2, 99)
            q, ans = f"convert {k} {a} to {b}", str(k * f)
        else:
            word = rng.choice(sorted(CATEGORY))
            q, ans = f"classify {rng.choice(ADJECTIVES)} {word}", CATEGORY[word]
        if q in seen:
            continue
        seen.add(q)
        out.append({"inputs": {"question": q}, "outputs": {"answer": ans}})
    return out


def _noisy(examples: list[dict[str, Any]], share: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"noise:{seed}")
    out = []
    for ex in examples:
        if rng.random() < share:
            wrong = rng.choice([c for c in sorted(WORDS) if c != ex["outputs"]["answer"]])
            ex = {"inputs": ex["inputs"], "outputs": {"answer": wrong}}
        out.append(ex)
    return out


def splits(task: str, seed: int, n_train: int, n_dev: int, n_held: int) -> tuple[list, list, list]:
    """Disjoint train / dev / held-out examples (labels task: train and dev 25% noisy)."""
    pool = _examples(task, n_train + n_dev + n_held, seed)
    train, dev, held = pool[:n_train], pool[n_train:n_train + n_dev], pool[n_train + n_dev:]
    if task == "labels":
        train, dev = _noisy(train, 0.25, seed), _noisy(dev, 0.25, seed + 1)
    return train, dev, held


# ------------------------------------------------------------------------------------ runs


def _entry(task: str) -> OptimizeProgram:
    return OptimizeProgram(program=task, factory="adaptd.daemon.demo.toy:make_program",
                           metric="adaptd.daemon.demo.toy:exact_match", lm=f"bench.ensemble_bench:{task}_lm")


def _run(entry: OptimizeProgram, optimizer: str, params: dict[str, Any], train: list, dev: list,
         budget: Budget, out: Path) -> RunResult:
    with contextlib.redirect_stdout(io.StringIO()):  # DSPy's optimizers print progress
        return run_optimization(entry, optimizer=optimizer, params=params, train=train, dev=dev, budget=budget,
                                base_path=None, out_path=out, progress=lambda stage, details: None)


def held_out(entry: OptimizeProgram, result: RunResult, held: list, lm: dspy.BaseLM) -> float | None:
    """The saved program's mean metric on ``held`` (None: the run saved nothing)."""
    if result.path is None:
        return None
    from adaptd.daemon.optimize.runner import load_object

    with dspy.context(lm=lm):
        return round(score(load_program(entry, result.path), load_object(entry.metric or ""), to_dspy(held)), 4)


def one(task: str, seed: int, k: int, budget: int, sizes: tuple[int, int, int], work: Path) -> dict[str, Any]:
    os.environ[SEED_ENV] = str(seed)
    train, dev, held = splits(task, seed, *sizes)
    entry = _entry(task)
    eval_lm = {"sums": lambda: toy.ToyLM(seed=seed + 1000), "units": lambda: TaskLM(units_answer, seed + 1000),
               "labels": lambda: TaskLM(labels_answer, seed + 1000)}[task]
    s = Situation(train_size=len(train), dev_size=len(dev), budget_usd=1.0, budget_lm_calls=budget, program=task,
                  cost_per_call_usd=0.0001, missing_packages=missing_packages())
    rec = recommend(s)
    assert rec.optimizer is not None, rec.error
    single = _run(entry, rec.optimizer, rec.params, train, dev, Budget(1.0, budget), work / f"{task}-{seed}-single.json")
    plan = plan_ensemble(s, k=k)
    rows, results = [], {}
    for i, m in enumerate(plan.members):
        r = _run(entry, m.optimizer, m.params, train, dev, Budget(m.budget_usd, m.budget_lm_calls),
                 work / f"{task}-{seed}-m{i}.json")
        results[str(i)] = r
        rows.append({"job_id": str(i), "optimizer": m.optimizer, "status": r.status, "score_after": r.score_after,
                     "cost_usd": r.cost_usd, "lm_calls": r.lm_calls})
    choice = choose(rows)
    kept = results.get(choice.job_id or "")
    ranked = choose(rows, rule="ranked", dev_size=len(dev))  # the same runs, the other rule (pure)
    kept_ranked = results.get(ranked.job_id or "")
    return {
        "chosen_ranked": next((r["optimizer"] for r in rows if r["job_id"] == ranked.job_id), None),
        "ens_held_ranked": held_out(entry, kept_ranked, held, eval_lm()) if kept_ranked else None,
        "task": task, "seed": seed, "single": rec.optimizer, "single_status": single.status,
        "single_dev": single.score_after, "single_held": held_out(entry, single, held, eval_lm()),
        "single_calls": single.lm_calls, "single_usd": single.cost_usd,
        "members": [f"{r['optimizer']}:{r['status']}" for r in rows],
        "chosen": next((r["optimizer"] for r in rows if r["job_id"] == choice.job_id), None),
        "ens_dev": kept.score_after if kept else None,
        "ens_held": held_out(entry, kept, held, eval_lm()) if kept else None,
        "ens_calls": sum(r.lm_calls for r in results.values()),
        "ens_usd": round(sum(r.cost_usd for r in results.values()), 6), "budget": budget,
        "dev_before": single.score_before,
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--budget", type=int, default=1000, help="LM calls of one re-optimization (both arms)")
    parser.add_argument("--sizes", default="16,16,60", help="train,dev,held-out examples per task")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    assert len(sizes) == 3
    runs = []
    with tempfile.TemporaryDirectory(prefix="adaptd-ensemble-") as tmp:
        for task in ("sums", "units", "labels"):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                runs.append(one(task, seed, args.k, args.budget, sizes, Path(tmp)))  # type: ignore[arg-type]
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    cols = ["task", "seed", "single", "single_dev", "single_held", "single_calls", "chosen", "ens_dev", "ens_held",
            "chosen_ranked", "ens_held_ranked", "ens_calls"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in runs:
        print("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    print()
    print("| task | single held-out | ensemble held-out (cheaper) | >= single | ensemble held-out (ranked) |"
          " >= single | single LM calls | ensemble LM calls |")
    print("|---|---|---|---|---|---|---|---|")
    for task in ("sums", "units", "labels"):
        mine = [r for r in runs if r["task"] == task]

        def med(key: str, rows: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] or 0.0 for r in rows)

        def wins(key: str, rows: list[dict[str, Any]] = mine) -> str:
            return f"{sum((r[key] or 0.0) >= (r['single_held'] or 0.0) for r in rows)}/{len(rows)}"

        print(f"| {task} | {med('single_held'):.3f} | {med('ens_held'):.3f} | {wins('ens_held')} |"
              f" {med('ens_held_ranked'):.3f} | {wins('ens_held_ranked')} | {med('single_calls'):g} |"
              f" {med('ens_calls'):g} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
