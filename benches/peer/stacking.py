"""Where recoup's logistic model leaves signal: LightGBM boosted from recoup's logit.

Usage: target/peer-venv/bin/python benches/peer/stacking.py target/peer [--threads 2] [--trees 300]

DIR is what `recoup train --export-features DIR` wrote (benches/peer/run.sh
leaves it in target/peer/). Each run starts LightGBM from `recoup_logit`
(init_score) and lets its trees see one set of feature groups:

  payment   only the payment-level groups (one tree sum per request, free to serve)
  no-channel payment-level and time groups (one tree sum per distinct hour of a grid)
  all       every group

The test log loss each reaches says how much the trees add on top of the
logistic model, and whether that gain needs the candidate's time or channel.
Early stopping on the calibration rows, as lightgbm_peer.py.
"""

import argparse
import json
import pathlib
import sys
import time

import lightgbm as lgb
import numpy as np
import polars as pl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from lightgbm_peer import auc, load, log_loss  # noqa: E402  (the same tables and metric definitions)

PAYMENT = ["decline_code", "decline_class", "retries_before", "amount_usd", "country", "payment_method",
           "card_brand", "card_funding", "billing_interval", "tenure_days", "messages_before",
           "method_updated", "advice_hint", "payday_confidence"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--leaves", type=int, default=31)
    a = ap.parse_args()

    parts, everything = load(a.dir)
    missing = [c for c in PAYMENT if c not in everything]
    assert not missing, f"export lacks {missing}"
    sets = {"payment": PAYMENT, "no-channel": [c for c in everything if c != "channel"], "all": everything}
    y = {k: df["label"].cast(pl.Int8).to_numpy() for k, df in parts.items()}
    z = {k: df["recoup_logit"].to_numpy() for k, df in parts.items()}
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    ours = sigmoid(z["test"])
    print(f"{'trees see':<12} {'trees':>6} {'log loss':>9} {'AUC':>7} {'fit s':>7}")
    print(f"{'(none)':<12} {0:>6} {log_loss(ours, y['test']):>9.4f} {auc(ours, y['test']):>7.4f} {'':>7}  recoup's raw logit")
    out = {}
    for name, features in sets.items():
        x = {k: df.select(features).to_numpy() for k, df in parts.items()}
        t0 = time.perf_counter()
        dfit = lgb.Dataset(x["fit"], y["fit"], init_score=z["fit"], feature_name=features, categorical_feature=features)
        dcal = lgb.Dataset(x["cal"], y["cal"], init_score=z["cal"], reference=dfit)
        params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": a.leaves, "min_data_in_leaf": 50,
                  "num_threads": a.threads, "deterministic": True, "seed": 1, "verbose": -1}
        booster = lgb.train(params, dfit, num_boost_round=a.trees, valid_sets=[dcal],
                            callbacks=[lgb.early_stopping(10, verbose=False)])
        seconds = time.perf_counter() - t0
        trees = booster.best_iteration or a.trees
        p = sigmoid(z["test"] + booster.predict(x["test"], num_iteration=trees, raw_score=True))
        out[name] = {"trees": trees, "log_loss": log_loss(p, y["test"]), "auc": auc(p, y["test"]), "fit_seconds": seconds}
        print(f"{name:<12} {trees:>6} {out[name]['log_loss']:>9.4f} {out[name]['auc']:>7.4f} {seconds:>7.1f}")
    (a.dir / "stacking.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
