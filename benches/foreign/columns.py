"""Cut a contract-v1 CSV history down to what a payment platform's bare export
holds (run.sh, RECOUP_FOREIGN_COLUMNS=required): the contract's required
columns, and `network_code` (this world's failed rows carry their reason only
as the issuer's code). No update flags, no payment method ids, no channels,
propensities, time zones, card details or tenure: recoup must train, say
what it could not learn, and still serve.

    columns.py HISTORY.csv BARE.csv
"""

import csv
import sys

KEEP = ["attempt_id", "payment_id", "customer_id", "attempted_at", "attempt_number", "amount_minor", "currency",
        "payment_method", "country", "outcome", "decline_code", "network_code"]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f, open(dst, "w", newline="") as g:
        rows = csv.DictReader(f)
        missing = [c for c in KEEP if c not in rows.fieldnames]
        if missing:
            sys.exit(f"{src}: no column {', '.join(missing)}")
        out = csv.DictWriter(g, fieldnames=KEEP, extrasaction="ignore")
        out.writeheader()
        for row in rows:
            out.writerow(row)


if __name__ == "__main__":
    main()
