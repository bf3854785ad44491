"""``make bench-experiments``: listening sessions an A/B test and an interleaving test need to decide.

On the pipeline's own outputs (``data/split``, ``models/``: run ``make run`` first), the champion is a
competitor and two challengers are a better and a worse model (by test nDCG@10): each test listener's
top-10 from each model is shown to simulated listeners whose held-out test listens are their future
(:mod:`recsys.experiments.simulation`). For each number of sessions, ``--repeats`` simulated experiments
of each method end with the project's decision rules; the result is the share that decided right, wrong, or
not at all, and the fewest sessions that decide right 80 % and 95 % of the time.
Results: ``bench/results/experiments.json`` and the "Online experiments" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale import replace_section
from recsys.io import write_json, write_text

RESULTS = Path("bench/results/experiments.json")
DOC = Path("docs/benchmarks.md")
SECTION = "## Online experiments: sessions an A/B test and interleaving need"
SESSIONS = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
POWERS = (0.8, 0.95)


def top_lists(model_name: str, k: int) -> tuple[list[list[int]], list[set[int]], float]:
    """Each test listener's top-``k`` (training items excluded), their test items, and the model's nDCG@k."""
    from recsys.models import load_recommender
    from recsys.offline.metrics import ranking_metrics
    from recsys.offline.ranking import rank_top_k
    from recsys.offline.split import load_split
    from recsys.paths import MODELS_DIR, SPLIT_DIR, model_file

    split = load_split(SPLIT_DIR)
    users = np.flatnonzero(np.diff(split.test.indptr))
    model = load_recommender(model_file(model_name, MODELS_DIR))
    top = rank_top_k(model.score, users, k, split.train_full)
    ndcg = float(np.nanmean(ranking_metrics(top, split.test, users, (k,))[f"ndcg@{k}"]))
    future = [
        set(split.test.indices[split.test.indptr[u] : split.test.indptr[u + 1]].tolist()) for u in users
    ]
    return top.tolist(), future, ndcg


def run(champion: str, challengers: dict[str, str], repeats: int, k: int, seed: int) -> dict[str, Any]:
    """Power curves of both methods for each challenger against ``champion``."""
    from recsys.experiments.report import LOSES, WINS
    from recsys.experiments.simulation import power_curve, sessions_needed, true_effect

    ours, future, ndcg = top_lists(champion, k)
    results: dict[str, Any] = {"champion": {"model": champion, f"ndcg@{k}": ndcg}, "challengers": {}}
    for label, name in challengers.items():
        theirs, _, their_ndcg = top_lists(name, k)
        right = WINS if their_ndcg > ndcg else LOSES
        began = time.perf_counter()
        curves = power_curve(ours, theirs, future, SESSIONS, repeats, seed)
        needed = {
            method: {str(p): sessions_needed(curve, right, p) for p in POWERS}
            for method, curve in curves.items()
        }
        results["challengers"][label] = {
            "model": name,
            f"ndcg@{k}": their_ndcg,
            "right_decision": right,
            "expected_hit_rate": true_effect(ours, theirs, future),
            "curves": {m: {str(n): shares for n, shares in c.items()} for m, c in curves.items()},
            "sessions_needed": needed,
            "seconds": round(time.perf_counter() - began, 1),
        }
        print(label, json.dumps(needed), flush=True)
    return results


def table(payload: dict[str, Any]) -> str:
    """The doc section: sessions needed per method and challenger, and the share right at each size."""
    champion = payload["champion"]
    lines = [
        SECTION,
        "",
        f"Command: `make bench-experiments` (`python -m benchmarks.experiments {payload['args']}`); "
        f"{payload['repeats']} simulated experiments per size; champion `{champion['model']}` (test nDCG@10 "
        f"{champion['ndcg@10']:.4f}); listeners drawn from the {payload['listeners']:,} test listeners, "
        "position-biased clicks on their held-out future. Sessions needed to reach the right decision in "
        "80 % and 95 % of experiments (A/B: 95 % interval of the hit-rate difference excludes 0; "
        "interleaving: sign test at 5 %):",
        "",
        "| challenger | nDCG@10 | expected hit rate (champion -> challenger) | A/B 80 % | A/B 95 % "
        "| interleaving 80 % | interleaving 95 % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, row in payload["challengers"].items():
        need = row["sessions_needed"]
        hit = row["expected_hit_rate"]
        cells = [need[m][str(p)] for m in ("ab", "interleaving") for p in POWERS]
        lines.append(
            f"| {label} (`{row['model']}`) | {row['ndcg@10']:.4f} | {hit['champion']:.3f} -> "
            f"{hit['challenger']:.3f} | "
            + " | ".join(f"> {SESSIONS[-1]:,}" if c is None else f"{c:,}" for c in cells)
            + " |"
        )
    lines += ["", "Share of experiments deciding right / wrong at each number of sessions:", ""]
    lines += ["| challenger | method | " + " | ".join(f"{n:,}" for n in SESSIONS) + " |"]
    lines += ["| --- | --- | " + " | ".join("---" for _ in SESSIONS) + " |"]
    for label, row in payload["challengers"].items():
        for method, curve in row["curves"].items():
            wrong = "challenger loses" if row["right_decision"] == "challenger wins" else "challenger wins"
            cells = [
                f"{curve[str(n)][row['right_decision']]:.2f} / {curve[str(n)][wrong]:.2f}" for n in SESSIONS
            ]
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.experiments [--repeats 100]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--champion", default="als")
    parser.add_argument("--better", default="lightfm_hybrid")
    parser.add_argument("--worse", default="rp3beta")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    payload = run(args.champion, {"better": args.better, "worse": args.worse}, args.repeats, 10, args.seed)
    payload |= {"args": " ".join(sys.argv[1:] if argv is None else argv), "repeats": args.repeats}
    payload["listeners"] = len(top_lists(args.champion, 1)[1])
    write_json(RESULTS, payload)
    write_text(DOC, replace_section(DOC.read_text(encoding="utf-8"), SECTION, table(payload)))
    print(table(payload))


if __name__ == "__main__":
    main()
