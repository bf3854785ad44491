"""``make bench-scale``: every step of the loop on generated data at S1, S10 and S50, time and peak memory.

Each size is a data set of the ``synthetic`` source (:mod:`recsys.data.synthetic`, seeded) run through the
project's own stages in a scratch folder; every step runs in a fresh spawned process, so its peak RSS is
its own. Steps: generate (the ingest stage), prepare, features, split; the fit of every model of the train
stage (the hybrid and LightFM without features for ``--epochs`` epochs, their full fit extrapolated per
epoch); the evaluation of every model on the test part (all users, or ``--eval-users`` of them with the
full time extrapolated per user); the evaluation sharded over 1 and 2 Dask workers (Prefect); and the
service's start: loading the model and building its serving state, then the first and repeated
``/recommend`` rankings of random known listeners (in process: the HTTP layer is ``make bench-serve``'s),
beside a raw numpy product over the same item vectors (the floor). Results go to
``bench/results/scale.json`` and the "Scale" section of ``docs/benchmarks.md``, with each step's growth
exponent over the number of listens.

Examples
--------
``python -m benchmarks.scale --sizes S1,S10 --epochs 2``
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale_ann import step_ann
from benchmarks.scale_retrain import step_retrain
from benchmarks.scale_run import step_run
from recsys.io import write_json, write_text
from recsys.paths import ITEMS_TABLE
from recsys.specs import HYBRID, MODELS

# Fitted one by one here; the two-stage ranker is fitted by the train stage on the others (the
# large-catalogue preset switches it off; its cost at S10 is benchmarks/scale_ranker.py's).
MODEL_NAMES = tuple(spec.name for spec in MODELS if not spec.stacked)

RESULTS = Path("bench/results/scale.json")
DOC = Path("docs/benchmarks.md")
COMMAND = "make bench-scale"
SECTION = "## Scale: generated data at S1, S10 and S50"
REQUESTS = 300

Step = Callable[[Path, dict[str, Any]], dict[str, Any]]

LIGHT = "lightfm_hybrid (1 member, 64 components, max_sampled 30)"
LIGHT_HYBRID: dict[str, Any] = {"members": 1, "no_components": 64, "max_sampled": 30}
"""A lighter hybrid timed beside the configured one (``--only fit-light``): WARP's negative sampling
(``max_sampled``), the components and the members set an epoch's cost."""

PRESET = "large-catalogue"
PROFILED = f"lightfm_hybrid (preset {PRESET})"
"""The hybrid of ``recsys run --preset large-catalogue`` (``--only fit-profile``), chosen by quality per
minute (``make bench-profile``); its model, kept in ``models_profile``, is the champion ``--only retrain``
retrains."""


def preset_settings() -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """The preset's dotted settings, its ``train.lightfm`` overrides and its top tags an item (or None)."""
    from recsys.cli.main import load_preset

    settings = load_preset(PRESET)
    prefix = "train.lightfm."
    lightfm = {key.removeprefix(prefix): value for key, value in settings.items() if key.startswith(prefix)}
    return settings, lightfm, settings.get("features.tags.top_n")


def _params(root: Path) -> Any:
    from recsys.config import load_params

    return load_params(root / "params.yaml")


def features_folder(root: Path, tags: int | None) -> Path:
    """The features folder for ``tags`` top tags an item (built once beside the size's own)."""
    from recsys import stages
    from recsys.config import load_params

    if tags is None:
        return root / "features"
    folder = root / f"features_tags{tags}"
    if not (folder / "item_features.npz").exists():
        params = load_params(root / "params.yaml")
        params = params.model_copy(
            update={
                "features": params.features.model_copy(
                    update={"tags": params.features.tags.model_copy(update={"top_n": tags})}
                )
            }
        )
        stages.features(params, root / "prepared", folder)
    return folder


def step_generate(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recsys import stages

    summary = stages.ingest(_params(root), root / "raw")
    return {"shape": summary["shape"], "bytes": summary["bytes"]}


def step_prepare(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recsys import stages

    quality = stages.prepare(_params(root), root / "raw", root / "prepared")
    return {"interactions": quality["summary"]["interactions"]}


def step_features(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recsys import stages

    summary = stages.features(_params(root), root / "prepared", root / "features")
    return {"features": summary.get("n_features"), "nonzeros_per_item": summary["nnz"] / summary["n_items"]}


def step_split(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recsys import stages

    summary = stages.split(_params(root), root / "prepared", root / "split")
    return {"train_interactions": summary["parts"]["train_full"]["interactions"]}


def _fit(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Fit one model (``options["model"]``) on train + valid and save it; LightFM for ``epochs`` epochs."""
    from recsys import stages
    from recsys.models import LightFMRecommender
    from recsys.offline.train import baselines
    from recsys.paths import model_file
    from recsys.specs import CF, HYBRID

    params = _params(root)
    loaded, features = stages.training_inputs(root / options.get("features", "features"), root / "split")
    name = options["model"]
    threads = params.train.final_threads
    extra: dict[str, Any] = {}
    if name in (HYBRID, CF):
        section = params.train.lightfm if name == HYBRID else params.train.lightfm_cf
        section = section.model_copy(update=options.get("overrides", {}))
        epochs = min(options["epochs"], section.epochs)
        config = section.model_copy(update={"epochs": epochs})
        model: Any = LightFMRecommender(config, params.seed, threads, name)
        start = time.perf_counter()
        model.fit(loaded.train_full, features.matrix if name == HYBRID else None)
        seconds = time.perf_counter() - start
        extra = {
            "epochs_run": epochs,
            "epochs_configured": section.epochs,
            "seconds_per_epoch": seconds / epochs,
            "full_fit_seconds": seconds / epochs * section.epochs,
            "members": section.members,
            "extrapolated": epochs < section.epochs,
        }
    else:
        model = next(candidate for candidate in baselines(params) if candidate.name == name)
        start = time.perf_counter()
        model.fit(loaded.train_full)
        seconds = time.perf_counter() - start
        extra = {"full_fit_seconds": seconds}
    if not options.get("overrides") or options.get("models"):  # a variant is kept only where asked
        model.save(model_file(name, root / options.get("models", "models")))
    pairs = loaded.train_full.nnz * (extra.get("epochs_run", 1))
    return extra | {"interactions_per_second": pairs / seconds if seconds else None}


def step_train(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The train stage as ``recsys train`` runs it (the hybrid in its own process beside the other six
    models) with ``options["overrides"]`` (a preset's dotted settings): the full run, nothing extrapolated.
    The peak RSS is this process's (the other six); the hybrid's child is not counted."""
    from flows.dvc import apply_overrides
    from recsys import stages
    from recsys.config import load_params

    with tempfile.TemporaryDirectory(prefix="recsys-scale-params-") as folder:
        copy = Path(folder) / "params.yaml"
        shutil.copyfile(root / "params.yaml", copy)
        apply_overrides(
            copy, {k: v for k, v in options.get("overrides", {}).items() if k.startswith("train.")}
        )
        params = load_params(copy)
    summary = stages.train(
        params, root / options.get("features", "features"), root / "split", root / "models_stage", True
    )
    return {"fit_seconds": summary["fit_seconds"], "lightfm": summary["lightfm"]}


def _evaluate(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """One model on the test part: all users, or a seeded sample of ``eval_users`` (time extrapolated);
    ``threads`` batches at once (default: the harness's own choice)."""
    from recsys.models import load_recommender
    from recsys.offline.batches import THREADS_ENV, evaluation_threads
    from recsys.offline.evaluation import evaluate, relevant_entries
    from recsys.offline.metrics import positive_counts
    from recsys.offline.split import load_split
    from recsys.paths import model_file

    if options.get("threads"):
        os.environ[THREADS_ENV] = str(options["threads"])  # this step's own spawned process
    params = _params(root)
    loaded = load_split(root / "split")
    model = load_recommender(model_file(options["model"], root / "models"))
    mask = np.ones(loaded.test.shape[1], dtype=bool)
    users = np.flatnonzero(positive_counts(relevant_entries(loaded.train_full, loaded.test, mask)))
    chosen = _sample(users, options.get("eval_users"))
    test = loaded.test[chosen]
    start = time.perf_counter()
    result = evaluate(
        lambda batch: model.score(chosen[batch]), loaded.train_full[chosen], test, params.evaluate
    )
    seconds = time.perf_counter() - start
    return {
        "users": len(chosen),
        "all_users": len(users),
        "full_seconds": seconds * len(users) / max(len(chosen), 1),
        "extrapolated": len(chosen) < len(users),
        "threads": evaluation_threads(),
        "ndcg@10": result.metrics.get("ndcg@10"),
        "auc": result.metrics.get("auc"),
    }


def _sample(users: np.ndarray, limit: int | None) -> np.ndarray:
    if not limit or len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(0).choice(users, size=limit, replace=False))


def step_sharded(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The hybrid's evaluation sharded over ``workers`` Dask workers (a Prefect flow on its ephemeral
    server), users capped as in the evaluate step; the second of two runs is timed (it still includes
    starting the flow's LocalCluster, a few seconds)."""
    from flows.evaluation import run_sharded_evaluation

    split = root / "split"
    if options.get("eval_users"):
        split = _sampled_split(root, options["eval_users"])

    def run() -> dict[str, Any]:
        return run_sharded_evaluation(
            "dask",
            n_workers=options["workers"],
            shards=options["workers"],
            project_dir=str(root),
            split_dir=str(split.relative_to(root)),
            models_dir="models",
            params_path="params.yaml",
        )

    run()  # starts Prefect's ephemeral server and warms the page cache: the second run is measured
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    return {"workers": options["workers"], "users": result["n_users"], "ndcg@10": result["ndcg@10"]} | {
        "warm_flow_seconds": seconds
    }


def _sampled_split(root: Path, limit: int) -> Path:
    """A copy of the split whose test part keeps only ``limit`` users' entries (the others: none)."""
    import dataclasses

    import scipy.sparse as sp

    from recsys.offline.split import load_split, save_split

    target = root / f"split_{limit}"
    if target.exists():
        return target
    loaded = load_split(root / "split")
    users = np.flatnonzero(np.diff(loaded.test.indptr))
    keep = np.zeros(loaded.test.shape[0], dtype=np.float32)
    keep[_sample(users, limit)] = 1.0
    test = sp.csr_matrix(sp.diags(keep) @ loaded.test)
    test.eliminate_zeros()
    target.mkdir()
    save_split(dataclasses.replace(loaded, test=test), target)
    return target


def step_serve(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Service start: load the hybrid and build its serving state; then ranking latencies."""
    import pandas as pd

    from recsys.columns import Col
    from recsys.models import LightFMRecommender
    from recsys.offline.features import load_item_features
    from recsys.offline.split import load_split
    from recsys.paths import model_file
    from recsys.registry.artifact import ServingArtifact
    from recsys.serving.state import CACHED_TOP, ServingState
    from recsys.specs import HYBRID

    start = time.perf_counter()
    model = LightFMRecommender.load(model_file(HYBRID, root / "models"))
    loaded = load_split(root / "split")
    features = load_item_features(root / "features")
    items = pd.read_parquet(root / "prepared" / ITEMS_TABLE, columns=[Col.ITEM, Col.NAME])
    names = items.set_index(Col.ITEM)[Col.NAME].reindex(loaded.item_ids).astype(str).tolist()
    artifact = ServingArtifact(
        "bench", model, features, loaded.user_ids, loaded.item_ids, names,
        [[] for _ in loaded.item_ids], loaded.train_full, {},
    )  # fmt: skip
    state = ServingState(artifact, bias_strength=0.0)
    start_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    users = rng.choice(len(loaded.user_ids), size=REQUESTS, replace=False)
    first = _latencies(lambda user: state.rank_known(int(user), 10), users)
    again = _latencies(lambda user: state.rank_known(int(user), 10), users)
    vectors = np.ascontiguousarray(state.item_vectors)
    floor = _latencies(lambda user: np.argpartition(vectors @ state.user_vectors[user], -10)[-10:], users)
    return {
        "start_seconds": start_seconds,
        "first_request_ms": _percentiles(first),
        "cached_request_ms": _percentiles(again),
        "numpy_floor_ms": _percentiles(floor),
        "eager_ranking_seconds": float(np.mean(first)) / 1000 * len(loaded.user_ids),
        "cached_top": CACHED_TOP,
        "items": len(loaded.item_ids),
    }


def step_service(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The real service (``bentoml serve``, 2 workers) on the size's hybrid: start time, worker RSS,
    ``/recommend`` latency, and a champion reload under load with every answer's status counted."""
    import threading

    import httpx

    from benchmarks.rss import worker_rss
    from benchmarks.serve import CLIENT_TOKEN, free_port, start, stop
    from benchmarks.soak import service_env
    from recsys import registry
    from recsys.offline.split import load_split

    home, work = root / "bentoml", root / "service"
    work.mkdir(parents=True, exist_ok=True)
    token = "scale-bench"

    def package() -> str:
        tag = registry.save_candidate(
            root / "models", root / "features", root / "split", {},
            params_dict={"bench": "scale"}, dvc_lock_hash="bench", git_commit="bench",
            prepared_dir=root / "prepared", home=home,
        )  # fmt: skip
        registry.promote(tag, home=home)
        return tag

    first = package()
    users = load_split(root / "split").user_ids
    env = service_env(dict(os.environ), home, work, None) | {"RECSYS_ADMIN_TOKEN": token}
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", "recsys.serving.service:Recommender"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    began = time.perf_counter()
    process = start(command, env, port, work / "service.log")
    start_seconds = time.perf_counter() - began
    statuses: list[int] = []
    latencies: list[float] = []
    versions: set[str] = set()
    halt = threading.Event()
    rng = np.random.default_rng(0)

    def hammer() -> None:
        headers = {"X-Client-Token": CLIENT_TOKEN}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers) as client:
            while not halt.is_set():
                user = users[int(rng.integers(len(users)))]
                sent = time.perf_counter()
                try:
                    answer = client.post("/recommend", json={"user_id": user, "k": 10})
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        versions.add(answer.json()["model_version"])
                except httpx.TransportError:
                    statuses.append(0)
                latencies.append((time.perf_counter() - sent) * 1000)

    try:
        rss = worker_rss(process.pid)
        clients = [threading.Thread(target=hammer) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(20)
        steady = list(latencies)
        second = package()
        began = time.perf_counter()
        reload = httpx.post(
            f"http://127.0.0.1:{port}/admin/reload", headers={"X-Admin-Token": token}, timeout=300
        )
        reload_seconds = time.perf_counter() - began
        time.sleep(15)
        rss_after = worker_rss(process.pid)
        halt.set()
        for client in clients:
            client.join()
        paced = _paced(port, process.pid, users, work)
    finally:
        halt.set()
        stop(process)
    return {
        "start_seconds": start_seconds,
        "reload_seconds": reload_seconds,
        "reload_status": reload.status_code,
        "versions_seen": sorted(versions),
        "swapped": second in versions and first in versions,
        "requests": len(statuses),
        "failed": sum(status != 200 for status in statuses),
        "steady_ms": _percentiles(steady) if steady else {},
        "paced": paced,
        "worker_rss_mb": {"start": _mb(rss), "after_reload": _mb(rss_after)},
    }


PACED_RPS, PACED_SECONDS = 100.0, 30.0


def _paced(port: int, pid: int, users: list[str], work: Path) -> dict[str, Any]:
    """``/recommend`` at a fixed :data:`PACED_RPS` (open loop, no coordinated omission) for listeners not
    asked before (first requests: each ranks the whole catalogue): the latency a listener meets below
    saturation (at S1 there are fewer listeners than requests: repeats there are cached)."""
    from benchmarks.pacer import run_pacer

    n = int(PACED_RPS * PACED_SECONDS)
    chosen = np.random.default_rng(1).choice(len(users), size=n, replace=len(users) < n)
    bodies = work / "paced.txt"
    bodies.write_text(
        "".join(json.dumps({"user_id": users[i], "k": 10}) + "\n" for i in chosen), encoding="utf-8"
    )
    summary = run_pacer(f"http://127.0.0.1:{port}", bodies, PACED_RPS, PACED_SECONDS, 8, pid)
    keep = ("target_rps", "achieved_rps", "requests", "errors", "p50_ms", "p99_ms", "p999_ms")
    return {key: summary[key] for key in keep}


def _mb(rss: dict[int, int]) -> list[float]:
    return sorted(round(value / 2**20, 1) for value in rss.values())


def _latencies(action: Callable[[Any], object], users: np.ndarray) -> list[float]:
    out = []
    for user in users:
        start = time.perf_counter()
        action(user)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


STEPS: dict[str, Step] = {
    "generate": step_generate,
    "prepare": step_prepare,
    "features": step_features,
    "split": step_split,
    "fit": _fit,
    "evaluate": _evaluate,
    "sharded": step_sharded,
    "serve": step_serve,
    "service": step_service,
    "retrain": step_retrain,
    "ann": step_ann,
    "train": step_train,
    "run": step_run,
}


def _child(name: str, root: str, options: dict[str, Any], queue: Any) -> None:
    try:
        start = time.perf_counter()
        result = STEPS[name](Path(root), options)
        result["seconds"] = time.perf_counter() - start
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put(result)
    except Exception as exc:  # a step that refuses (e.g. memory) is a result, not a crash of the bench
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_step(name: str, root: Path, **options: Any) -> dict[str, Any]:
    """One step in a fresh spawned process: its result, wall seconds and peak RSS (MB)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, str(root), options, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    label = options.get("model") or options.get("workers") or ""
    print(f"  {name} {label}: {_brief(result)}", flush=True)
    return result


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    return f"{result['seconds']:.1f} s, {result['peak_rss_mb']:.0f} MB"


def run_size(size: str, work: Path, epochs: int, eval_users: int | None) -> dict[str, Any]:
    """Every step at one size; returns the steps' results."""
    from flows.dvc import apply_overrides

    root = work / size
    shutil.rmtree(root, ignore_errors=True)
    (root / "models").mkdir(parents=True)
    shutil.copy("params.yaml", root / "params.yaml")
    apply_overrides(root / "params.yaml", {"dataset.name": "synthetic", "dataset.synthetic.size": size})
    print(f"{size}:", flush=True)
    upstream = ("generate", "prepare", "features", "split")
    steps: dict[str, Any] = {name: run_step(name, root) for name in upstream}
    steps["fit"] = {model: run_step("fit", root, model=model, epochs=epochs) for model in MODEL_NAMES}
    steps["evaluate"] = {
        model: run_step("evaluate", root, model=model, eval_users=eval_users)
        for model in MODEL_NAMES
        if "error" not in steps["fit"][model]
    }
    steps["evaluate_all"] = {
        str(threads): run_step("evaluate", root, model=HYBRID, threads=threads) for threads in (1, 2)
    }
    steps["sharded"] = {
        str(workers): run_step("sharded", root, workers=workers, eval_users=eval_users) for workers in (1, 2)
    }
    steps["serve"] = run_step("serve", root)
    steps["service"] = run_step("service", root)
    return steps


def growth(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each step's exponent ``b`` in ``time ~ listens^b`` between consecutive sizes."""
    sizes = list(results)
    out: dict[str, dict[str, float]] = {}
    for small, large in itertools.pairwise(sizes):
        ratio = results[large]["listens"] / results[small]["listens"]
        for step, (a, b) in _paired_times(results[small], results[large]).items():
            if a > 0 and b > 0 and ratio > 1:
                out.setdefault(step, {})[f"{small}->{large}"] = round(math.log(b / a) / math.log(ratio), 2)
    return out


def _paired_times(small: dict[str, Any], large: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {
        key: (small["times"][key], large["times"][key]) for key in small["times"] if key in large["times"]
    }


def times_of(steps: dict[str, Any]) -> dict[str, float]:
    """The comparable wall time of each step (full fits and evaluations, extrapolated where sampled)."""
    times = {name: steps[name].get("seconds", 0.0) for name in ("generate", "prepare", "features", "split")}
    for model, fit in steps["fit"].items():
        if "error" not in fit:
            times[f"fit {model}"] = fit["full_fit_seconds"]
    for model, result in steps["evaluate"].items():
        if "error" not in result:
            times[f"evaluate {model}"] = result["full_seconds"]
    for threads, result in steps.get("evaluate_all", {}).items():
        if "error" not in result:
            times[f"evaluate {HYBRID}, all users, {threads} thread(s)"] = result["full_seconds"]
    for workers, result in steps.get("sharded", {}).items():
        if "error" not in result:
            times[f"sharded evaluation, {workers} worker(s)"] = result.get(
                "warm_flow_seconds", result.get("flow_seconds", 0.0)
            )
    if "error" not in steps["serve"]:
        times["serving state build"] = steps["serve"]["start_seconds"]
    if "error" not in steps.get("service", {"error": "not run"}):
        times["service start (HTTP)"] = steps["service"]["start_seconds"]
        times["champion reload"] = steps["service"]["reload_seconds"]
    if "error" not in steps.get("train_stage", {"error": "not run"}):
        times[f"train stage (preset {PRESET})"] = steps["train_stage"]["seconds"]
    if "error" not in steps.get("retrain", {"error": "not run"}):
        times[f"feedback retraining flow (preset {PRESET})"] = steps["retrain"]["flow_seconds"]
    if "error" not in steps.get("run", {"error": "not run"}):
        times[f"whole recsys run (preset {PRESET})"] = steps["run"]["wall_seconds"]
    return times


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.scale [--sizes S1,S10,S50] [--epochs 2] [--eval-users 5000]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="S1,S10,S50")
    parser.add_argument("--epochs", type=int, default=2, help="LightFM epochs actually run (then per epoch)")
    parser.add_argument("--eval-users", type=int, default=5000, help="users evaluated per model (0: all)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "recsys-scale"))
    parser.add_argument(
        "--only",
        choices=[
            "serve",
            "service",
            "fit-light",
            "fit-profile",
            "retrain",
            "train",
            "sharded",
            "evaluate",
            "evaluate-all",
            "ann",
            "run",
        ],
        help="rerun one step on existing folders (run: the whole recsys run with the preset, ~40 min at S50)",
    )
    parser.add_argument("--events", type=int, default=100_000, help="feedback events of --only retrain")
    parser.add_argument("--render", action="store_true", help="only rewrite the doc table from the results")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads(RESULTS.read_text(encoding="utf-8"))
        for result in payload["sizes"].values():
            result["times"] = times_of(result["steps"])
        payload["growth"] = growth(payload["sizes"])
        write_json(RESULTS, payload)
        write_text(DOC, replace_section(DOC.read_text(encoding="utf-8"), SECTION, table(payload)))
        return
    if args.only:  # rerun one step on the sizes' existing folders, merged into the saved results
        payload = json.loads(RESULTS.read_text(encoding="utf-8"))
        for size in args.sizes.split(","):
            steps = payload["sizes"][size]["steps"]
            if args.only == "fit-light":
                steps["fit"][LIGHT] = run_step(
                    "fit",
                    Path(args.work) / size,
                    model="lightfm_hybrid",
                    epochs=args.epochs,
                    overrides=LIGHT_HYBRID,
                )
            elif args.only in ("fit-profile", "retrain", "train"):
                _profiled(args.only, Path(args.work) / size, args, steps)
            elif args.only == "evaluate":  # every fitted model, on --eval-users users
                steps["evaluate"] = {
                    model: run_step(
                        "evaluate", Path(args.work) / size, model=model, eval_users=args.eval_users
                    )
                    for model in MODEL_NAMES
                    if "error" not in steps["fit"].get(model, {"error": "not fitted"})
                }
            elif args.only == "evaluate-all":  # the hybrid on every user, one process, 1 and 2 threads
                steps["evaluate_all"] = {
                    str(threads): run_step("evaluate", Path(args.work) / size, model=HYBRID, threads=threads)
                    for threads in (1, 2)
                }
            elif args.only == "ann":  # the served profile's hybrid, unmitigated and re-ranked
                root = Path(args.work) / size
                models = "models_stage" if (root / "models_stage").exists() else "models"
                steps["ann"] = {
                    str(strength): run_step("ann", root, models=models, strength=strength)
                    for strength in (0.0, 0.1)
                }
            elif args.only == "sharded":
                steps["sharded"] = {
                    str(workers): run_step(
                        "sharded", Path(args.work) / size, workers=workers, eval_users=args.eval_users or None
                    )
                    for workers in (1, 2)
                }
            else:
                steps[args.only] = run_step(args.only, Path(args.work) / size)
            payload["sizes"][size]["times"] = times_of(steps)
        payload["growth"] = growth(payload["sizes"])
        write_json(RESULTS, payload)
        write_text(DOC, replace_section(DOC.read_text(encoding="utf-8"), SECTION, table(payload)))
        return
    results: dict[str, Any] = {}
    for size in args.sizes.split(","):
        steps = run_size(size, Path(args.work), args.epochs, args.eval_users or None)
        listens = steps["prepare"].get("interactions", 0)
        results[size] = {"listens": listens, "steps": steps, "times": times_of(steps)}
        _write(results, args)
    print(json.dumps({size: result["times"] for size, result in results.items()}, indent=1))


def _profiled(only: str, root: Path, args: argparse.Namespace, steps: dict[str, Any]) -> None:
    """``fit-profile``: the preset's hybrid for ``--epochs`` epochs, kept in ``models_profile``; ``retrain``:
    the nightly feedback retraining of that model with ``--events`` events under the preset's settings;
    ``train``: the whole train stage with the preset's settings."""
    settings, lightfm, tags = preset_settings()
    features = features_folder(root, tags).name
    if only == "train":
        steps["train_stage"] = run_step("train", root, overrides=settings, features=features)
        return
    if only == "retrain":
        steps["retrain"] = run_step(
            "retrain",
            root,
            events=args.events,
            overrides=settings,
            models="models_profile",
            features=features,
        )
        return
    steps["fit"][PROFILED] = run_step(
        "fit", root, model="lightfm_hybrid", epochs=args.epochs, overrides=lightfm, models="models_profile",
        features=features,
    )  # fmt: skip


def _write(results: dict[str, Any], args: argparse.Namespace) -> None:
    payload = {
        "command": COMMAND,
        "machine": {"python": platform.python_version(), "cpus": multiprocessing.cpu_count()},
        "epochs_run": args.epochs,
        "eval_users": args.eval_users,
        "sizes": results,
        "growth": growth(results),
    }
    write_json(RESULTS, payload)
    doc = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    write_text(DOC, replace_section(doc, SECTION, table(payload)))


def table(payload: dict[str, Any]) -> str:
    """The markdown section: wall time and peak RSS per step and size, and the growth exponents."""
    sizes = list(payload["sizes"])
    lines = [
        SECTION,
        "",
        f"Command: `{COMMAND}` (`python -m benchmarks.scale`), {payload['machine']['cpus']} cores. "
        "LightFM ran "
        f"{payload['epochs_run']} epochs per model (full fit = seconds per epoch x configured epochs); "
        f"evaluation on up to {payload['eval_users']} users per model (full time extrapolated per user).",
        "",
        "| step | " + " | ".join(f"{s} s (peak MB)" for s in sizes) + " | growth exponent |",
        "| --- | " + " | ".join("---" for _ in sizes) + " | --- |",
    ]
    # The steps in the order they run (times_of's), not the saved JSON's sorted keys.
    keys = list(dict.fromkeys(key for size in sizes for key in times_of(payload["sizes"][size]["steps"])))
    for key in keys:
        cells = []
        for size in sizes:
            seconds = payload["sizes"][size]["times"].get(key)
            cells.append("-" if seconds is None else f"{seconds:,.1f} ({_rss(payload['sizes'][size], key)})")
        exponents = ", ".join(f"{pair}: {value}" for pair, value in payload["growth"].get(key, {}).items())
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {exponents or '-'} |")
    lines += [
        "",
        "Serving at each size (in process: ranking only; HTTP: `bentoml serve`, 2 workers, 4 clients back to "
        f"back, i.e. saturated; paced: {PACED_RPS:.0f} req/s open loop, listeners' first requests):",
        "",
    ]
    lines += [
        "| size | items | first request p50 / p99 ms | cached p50 / p99 ms | numpy floor p50 / p99 ms | "
        "HTTP p50 / p99 ms | paced HTTP p50 / p99 ms | requests during reload (failed) | worker RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size in sizes:
        lines.append(_serving_row(size, payload["sizes"][size]["steps"]))
    return "\n".join(lines + _ann_rows(payload)) + "\n"


def _by_kind_and_width(item: tuple[str, Any]) -> tuple[str, int]:
    """``("l2 transform, efSearch 256", ...)`` -> ``("l2 transform, efSearch", 256)``: numeric widths."""
    kind, _, width = item[0].rpartition(" ")
    return kind, int(width) if width.isdigit() else 0


def _ann_rows(payload: dict[str, Any]) -> list[str]:
    """The approximate top-k table (``--only ann``): recall@10 and first-request latency per width."""
    rows = []
    for size, result in payload["sizes"].items():
        for strength, ann in result["steps"].get("ann", {}).items():
            if "error" in ann:
                rows.append(f"| {size} | {strength} | {ann['error']} | | | |")
                continue
            exact = ann["exact"]
            rows.append(
                f"| {size} | {strength} | exact | 1.000 | {exact['p50_ms']:.2f} / {exact['p99_ms']:.2f} | "
                f"{ann['verdict']} |"
            )
            for name, measured in sorted(ann["hnsw"].items(), key=_by_kind_and_width):
                rows.append(
                    f"| {size} | {strength} | HNSW {name} (build {measured['build_seconds']:.0f} s) | "
                    f"{measured['recall@10']:.3f} (min {measured['min_recall@10']:.1f}) | "
                    f"{measured['p50_ms']:.2f} / {measured['p99_ms']:.2f} | |"
                )
    if not rows:
        return []
    return [
        "",
        "Approximate top-k (`--only ann`; faiss HNSW, M 32, efConstruction 200, on the scorer's rows with "
        "the re-ranking folded in, by inner product or lifted to one norm and searched by L2; a listener's "
        "first request, one thread, 1,000 sampled listeners):",
        "",
        "| size | re-ranking strength | ranking | recall@10 (min) | p50 / p99 ms | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]


def _serving_row(size: str, steps: dict[str, Any]) -> str:
    serve, service = steps.get("serve", {}), steps.get("service", {"error": "not run"})

    def pair(values: dict[str, float] | None) -> str:
        return f"{values['p50']:.2f} / {values['p99']:.2f}" if values else "-"

    if "error" in serve:
        return f"| {size} | {serve['error']} |"
    http = "-" if "error" in service else pair(service.get("steady_ms"))
    paced = service.get("paced")
    paced_cell = f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f}" if paced else "-"
    reload = "-" if "error" in service else f"{service['requests']:,} ({service['failed']})"
    rss = (
        "-"
        if "error" in service
        else "/".join(f"{mb:,.0f}" for mb in service["worker_rss_mb"]["after_reload"])
    )
    return (
        f"| {size} | {serve['items']:,} | {pair(serve['first_request_ms'])} | "
        f"{pair(serve['cached_request_ms'])} | {pair(serve['numpy_floor_ms'])} | {http} | {paced_cell} | "
        f"{reload} | {rss} |"
    )


def _rss(size: dict[str, Any], key: str) -> str:
    steps = size["steps"]
    step = key.split(" ", 1)
    if key in steps:
        return f"{steps[key]['peak_rss_mb']:,.0f}"
    if key == "serving state build":
        return f"{steps['serve']['peak_rss_mb']:,.0f}"
    if key in ("service start (HTTP)", "champion reload") and "worker_rss_mb" in steps.get("service", {}):
        return "workers " + "/".join(f"{mb:,.0f}" for mb in steps["service"]["worker_rss_mb"]["after_reload"])
    if key.startswith("train stage"):
        return f"{steps['train_stage']['peak_rss_mb']:,.0f} + hybrid's process"
    if key.startswith("feedback retraining flow"):
        return f"{steps['retrain']['peak_rss_mb']:,.0f}"
    if key.startswith("whole recsys run"):
        return f"largest process {steps['run']['largest_process_rss_mb']:,.0f}"
    if key.startswith(f"evaluate {HYBRID}, all users"):
        threads = key.rsplit(", ", 1)[1].split(" ")[0]
        return f"{steps['evaluate_all'][threads]['peak_rss_mb']:,.0f}"
    if key.startswith("sharded evaluation"):
        workers = key.rsplit(", ", 1)[1].split(" ")[0]
        return f"{steps['sharded'][workers]['peak_rss_mb']:,.0f} + workers"
    group = {"fit": "fit", "evaluate": "evaluate"}.get(step[0])
    if group and len(step) == 2 and step[1] in steps[group]:
        return f"{steps[group][step[1]]['peak_rss_mb']:,.0f}"
    return "?"


def replace_section(doc: str, heading: str, section: str) -> str:
    """``doc`` with the section under ``heading`` (up to the next ``## ``) replaced, or appended."""
    start = doc.find(heading)
    if start < 0:
        return doc.rstrip("\n") + "\n\n" + section
    end = doc.find("\n## ", start + len(heading))
    if end < 0:
        return doc[:start] + section
    return doc[:start] + section.rstrip("\n") + "\n\n" + doc[end + 1 :]


if __name__ == "__main__":
    main()
