"""A data set the project has never trained on, through the ``files`` adapter with the committed settings.

``python -m benchmarks.unseen_data`` (``RECSYS_DATA_DIR`` or ``../shared/data``) turns Last.fm's tag
assignments (``user_taggedartists.dat``) into interactions (a listener "played" an artist as many times as
they tagged it) and ``artists.dat`` into items (names only: the tags come from the same events), runs the
stages from ``ingest`` to ``evaluate`` on them in ``--work``, and prints every model's test nDCG@10, ARP@10
and coverage@10 best first, then writes ``bench/results/unseen_data.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import pandas as pd

from recsys import stages
from recsys.config import Params, data_dir_from_env, load_params
from recsys.io import write_json

RESULTS = Path("bench/results/unseen_data.json")


def tagging_files(data_dir: Path, out: Path) -> tuple[Path, Path]:
    """``interactions.csv`` (user, item, plays) and ``items.csv`` (item, name) of the tag assignments."""
    source = data_dir / "hetrec2011-lastfm-2k"
    tagged = pd.read_csv(source / "user_taggedartists.dat", sep="\t")
    artists = pd.read_csv(source / "artists.dat", sep="\t", quoting=csv.QUOTE_NONE, usecols=["id", "name"])
    tagged = tagged[tagged["artistID"].isin(artists["id"])]
    pairs = tagged.groupby(["userID", "artistID"]).size().rename("plays").reset_index()
    pairs.columns = ["user", "item", "plays"]
    items = artists[artists["id"].isin(pairs["item"])].rename(columns={"id": "item"})
    out.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out / "interactions.csv", index=False)
    items.to_csv(out / "items.csv", index=False)
    return out / "interactions.csv", out / "items.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/recsys-unseen"))
    args = parser.parse_args(argv)
    interactions, items = tagging_files(data_dir_from_env() or Path("../shared/data"), args.work / "files")
    settings = load_params().model_dump()
    settings["dataset"]["name"] = "files"
    settings["dataset"]["files"] = {"interactions": str(interactions), "items": str(items), "kind": "artist"}
    params = Params.model_validate(settings)
    root = args.work / "run"
    start = time.perf_counter()
    stages.ingest(params, root / "raw", args.work / "files")
    stages.prepare(params, root / "raw", root / "prepared")
    stages.features(params, root / "prepared", root / "features")
    stages.split(params, root / "prepared", root / "split")
    stages.train(params, root / "features", root / "split", root / "models")
    report = stages.evaluate(
        params, root / "features", root / "split", root / "models", root / "metrics", root / "plots"
    )
    ranked = sorted(report["models"].items(), key=lambda item: -item[1]["ndcg@10"])
    rows = {
        name: {key: round(values[key], 4) for key in ("ndcg@10", "arp@10", "coverage@10", "auc")}
        for name, values in ranked
    }
    result = {"seconds": round(time.perf_counter() - start), "models": rows, "leads": report["uncertainty"]}
    write_json(RESULTS, result)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
