"""Peer pipeline: LightGBM on the exact feature tables `recoup train --export-features` writes.

Usage: python lightgbm_peer.py DIR [--trees 100] [--threads 2]

DIR holds train.parquet (column `split`: fit / calibration), test.parquet and
recoup.json (recoup's own held-out metrics and timings from the same run).
LightGBM fits on the `fit` rows with every feature group as a categorical
column, watches the `calibration` rows for early stopping (as recoup uses them
to choose its L2 penalty and calibrate), and is scored on the test rows with
the same metric definitions recoup uses. Prints both pipelines side by side.
"""

import argparse
import json
import pathlib
import time

import lightgbm as lgb
import numpy as np
import polars as pl
from scipy.stats import rankdata


def log_loss(p, y):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(p, y):
    r = rankdata(p)  # average ranks for ties, as recoup's AUC
    pos = y.sum()
    neg = len(y) - pos
    return float((r[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def ece(p, y, bins=10):
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(y))


NOT_FEATURES = ("label", "retry_at", "recoup_logit")


def load(d):
    """The exported fit, calibration and test rows ({"fit", "cal", "test"}) and
    their feature columns (recoup's logit and the label are not features)."""
    train = pl.read_parquet(d / "train.parquet")
    test = pl.read_parquet(d / "test.parquet")
    parts = {"fit": train.filter(pl.col("split") == "fit"), "cal": train.filter(pl.col("split") == "calibration"), "test": test}
    return parts, [c for c in test.columns if c not in NOT_FEATURES]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--leaves", type=int, default=63)
    ap.add_argument("--learning-rate", type=float, default=0.1)
    a = ap.parse_args()

    parts, features = load(a.dir)
    xs = {k: df.select(features).to_numpy() for k, df in parts.items()}
    ys = {k: df["label"].cast(pl.Int8).to_numpy() for k, df in parts.items()}

    params = {
        "objective": "binary",
        "learning_rate": a.learning_rate,
        "num_leaves": a.leaves,
        "min_data_in_leaf": 50,
        "num_threads": a.threads,
        "deterministic": True,
        "seed": 1,
        "verbose": -1,
    }
    t0 = time.perf_counter()
    dfit = lgb.Dataset(xs["fit"], ys["fit"], feature_name=features, categorical_feature=features, free_raw_data=False)
    dcal = lgb.Dataset(xs["cal"], ys["cal"], reference=dfit)
    booster = lgb.train(params, dfit, num_boost_round=a.trees, valid_sets=[dcal],
                        callbacks=[lgb.early_stopping(10, verbose=False)])
    fit_seconds = time.perf_counter() - t0
    p = booster.predict(xs["test"], num_iteration=booster.best_iteration)
    y = ys["test"]
    ours = json.loads((a.dir / "recoup.json").read_text())
    theirs = {"log_loss": log_loss(p, y), "auc": auc(p, y), "brier": float(np.mean((p - y) ** 2)), "ece": ece(p, y)}

    print(f"examples: {len(ys['fit'])} fit, {len(ys['cal'])} calibration, {len(y)} test; {a.threads} threads")
    print(f"{'pipeline':<34} {'log loss':>9} {'AUC':>7} {'Brier':>7} {'ECE':>7} {'fit s':>8}")
    m = ours["test"]
    ours_name = f"recoup ({ours['trees']} trees + channel terms)" if ours.get("trees") else "recoup (logistic + crosses)"
    print(f"{ours_name:<34} {m['log_loss']:>9.4f} {m['auc']:>7.4f} {m['brier']:>7.4f} {m['ece']:>7.4f} {ours['fit_seconds']:>8.1f}")
    name = f"LightGBM {booster.best_iteration or a.trees} trees"
    print(f"{name:<34} {theirs['log_loss']:>9.4f} {theirs['auc']:>7.4f} {theirs['brier']:>7.4f} {theirs['ece']:>7.4f} {fit_seconds:>8.1f}")
    out = {"lightgbm": {**theirs, "fit_seconds": fit_seconds, "trees": booster.best_iteration or a.trees,
                        "params": params, "version": lgb.__version__}, "recoup": ours}
    (a.dir / "peer.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
