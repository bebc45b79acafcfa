"""Keep the retries after an update of only N payments (run.sh, RECOUP_FOREIGN_UPDATES=N):
every other payment with a retry flagged `payment_method_updated` is left out whole, as
in a merchant's log where few payers update and are retried. recoup must not score an
updated card as the log's retries of the dead one, which the fit's penalty alone does
(it shrinks the few retries' weight toward 0), and must say that the P is partly a prior.
Which payments stay is drawn with a fixed seed.

    few_updates.py HISTORY.csv OUT.csv N
"""

import csv
import random
import sys


def main():
    src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(src, newline="") as f:
        rows = csv.DictReader(f)
        fields = rows.fieldnames
        rows = list(rows)
    updated = sorted({r["payment_id"] for r in rows if r.get("payment_method_updated") == "true"})
    keep = set(random.Random(1).sample(updated, min(n, len(updated))))
    drop = set(updated) - keep
    with open(dst, "w", newline="") as g:
        out = csv.DictWriter(g, fieldnames=fields)
        out.writeheader()
        kept = 0
        for r in rows:
            if r["payment_id"] not in drop:
                out.writerow(r)
                kept += 1
    print(f"{len(updated)} payments with a retry after an update, {len(keep)} kept; {kept} of {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
