"""Write a contract-v1 CSV history as a data team's pandas would write it to
Parquet (run.sh, RECOUP_FOREIGN_FORMAT=pandas): pandas' own type inference
(a code column of digits with gaps becomes float64, so `05` is 5.0; an
integer column with a gap becomes float64), low-cardinality text as
`category` (Parquet dictionaries), and the timestamp as a zoned datetime.

    to_parquet.py HISTORY.csv HISTORY.parquet

Then `compare` checks that recoup reads both to the same summary
(`recoup history check --json`): rows, payments, outcomes, decline codes and
classes, recoveries.

    to_parquet.py compare CSV_SUMMARY.json PARQUET_SUMMARY.json
"""

import json
import sys

CATEGORIES = ["currency", "payment_method", "card_brand", "card_funding", "country", "timezone", "outcome",
              "decline_code", "channel", "billing_interval"]
COMPARED = ["rows", "payments", "customers", "first_attempt", "last_attempt", "outcomes", "decline_codes",
            "decline_classes", "failed_payments", "recovered_payments", "payment_methods"]


def convert(src, dst):
    import pandas as pd

    df = pd.read_csv(src)
    df["attempted_at"] = pd.to_datetime(df["attempted_at"], utc=True)
    for c in CATEGORIES:
        if c in df:
            df[c] = df[c].astype("category")
    df.to_parquet(dst, index=False)
    types = ", ".join(f"{c} {t}" for c, t in df.dtypes.items() if c in ("network_code", "tenure_days", "currency"))
    print(f"wrote {len(df)} rows to {dst} as pandas types them ({types})")


def compare(a, b):
    x, y = (json.load(open(p)) for p in (a, b))
    differ = [k for k in COMPARED if x.get(k) != y.get(k)]
    if differ:
        for k in differ:
            print(f"{k}: CSV {x.get(k)} / Parquet {y.get(k)}", file=sys.stderr)
        sys.exit("the pandas-written Parquet does not read as the CSV it was written from")
    print(f"the pandas-written Parquet reads as the CSV: {x['rows']} rows, {len(x['decline_codes'])} decline codes")


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        convert(sys.argv[1], sys.argv[2])
