#!/usr/bin/env python3
"""A payment world recoup's own simulator did not write (#20: "don't tune to one world").

Written apart from `src/sim/`, in another language, with other dynamics and another
logging policy, to check what the zoo cannot: that `recoup train` and `recoup serve`
work on a history whose conventions we did not choose. Nothing here reads recoup's code.

The world
- Money is a balance, not a probability. Pay arrives at 03:00 local on the payer's pay
  days (weekly, biweekly or semi-monthly in the US, monthly at the month's end or the 25th
  in Europe); the balance then decays day by day at noon at a payer-specific rate with a
  multiplicative daily shock, and rent leaves on the 1st at 09:00. A charge fails
  `insufficient_funds` when the balance is below the amount; a fifth of those
  issuers report as `do_not_honor` (masking), per payer and day.
- Issuer risk: 2 % of charges (6 % between 00:00 and 05:00 local) are declined
  `do_not_honor`; the issuer then stays suspicious for an exponential time (mean 30 h).
- Outages: 1.5 % of charges fail `issuer_not_available`; the outage lasts an
  exponential time (mean 4 h).
- Cards expire (month drawn per payer); charges then fail `expired_card` until the payer
  updates the card: 3 % a day on their own, +20 % the day after an email, +30 % after an SMS.
- An email before a retry makes 12 % of payers top up the amount (SMS 18 %); an SMS
  makes 3 % cancel (email 0.5 %).
- Every random draw is a hash of (payer, what, when): every strategy meets the same
  world (common random numbers, so differences between strategies are paired).

The logging policy (the merchant's history)
- Retries 1–4 days after the failure at a random hour, then 2–6 days apart, at most
  four within 21 days; a message drawn before each (none 40 %, email 45 %, SMS 15 %),
  one hour before the retry; expired cards retried on the same schedule (before or
  after an update); no propensities; 40 % of declines carry only the raw network code.
  `history --log-policy fixed` (or `fixed-silent`) logs a plain schedule instead: days 2,
  4, 7 and 11 at the failure's time of day, an email before each retry (or none);
  `random-short` retries 2–48 h after the failure, then 12–72 h apart, up to six times.

`--variant wide` (on every command) changes the world's structure, not its parameters:
payers also in India (UTC+5:30), Australia (southern-hemisphere summer time), Japan (a
currency without minor units) and Brazil, each charged at a billing hour of their own local
day; 3 % of cards are reported lost or stolen some time in the year (`lost_card` 41 /
`stolen_card` 43), declined from then on until the payer updates them, like an expired
card. The evaluation counts a retry of such a card before the update as a rule violation,
and the fixed schedules skip those retries (a network rule every platform follows).

`python world.py history OUT.csv --payers 20000 --seed 3` writes the history;
`python world.py evaluate --payers 20000 --seed 11 --addr 127.0.0.1:50051 --gen DIR` dunns
the first failure of each payer of another draw with the eight fixed schedules recoup
ships (with and without an email) and with recoup's decisions over gRPC, and prints each
strategy's recovery, net, retries and messages per payment, the learned policy against
the best fixed schedule (paired bootstrap 95 %), and the chosen retries' calibration
(ECE, and per decline code and stage). It exits 1 if any request was refused, or (`--variant
wide`) a lost or stolen card was retried before its payer updated it. `probe` and `score-log` are
diagnostics (see their --help). See `run.sh`.
"""

import argparse
import collections
import csv
import datetime as dt
import hashlib
import math
import random
import struct
import sys
import zoneinfo

START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
DAYS = 12 * 31 + 60
WINDOW = dt.timedelta(days=21)
ATTEMPT_COST = 8.0
MESSAGE_COST = {"email": 0.1, "sms": 5.0, "push": 0.05, "in_app": 0.0}
TZ = {}


def u(*key):
    """A uniform draw in [0, 1) fixed by its key."""
    h = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return struct.unpack("<Q", h)[0] / 2**64


def tz(name):
    if name not in TZ:
        TZ[name] = zoneinfo.ZoneInfo(name)
    return TZ[name]


COUNTRIES = [  # country, time zone, currency, weight
    ("US", "America/New_York", "USD", 0.40),
    ("US", "America/Los_Angeles", "USD", 0.10),
    ("GB", "Europe/London", "GBP", 0.20),
    ("DE", "Europe/Berlin", "EUR", 0.15),
    ("FR", "Europe/Paris", "EUR", 0.15),
]
# `--variant wide`: other payers and other ways a card dies (see the docstring).
WIDE_COUNTRIES = [
    ("US", "America/Chicago", "USD", 0.25),
    ("GB", "Europe/London", "GBP", 0.10),
    ("IN", "Asia/Kolkata", "INR", 0.15),
    ("AU", "Australia/Sydney", "AUD", 0.15),
    ("JP", "Asia/Tokyo", "JPY", 0.15),
    ("BR", "America/Sao_Paulo", "BRL", 0.20),
]
VARIANT = "base"
HARD = ("lost_card", "stolen_card")


def business_day_before(d):
    while d.weekday() >= 5:
        d -= dt.timedelta(days=1)
    return d


def pay_days(kind, phase, first, last):
    """The local dates pay arrives, from `first` to `last`."""
    out, d = [], first
    while d <= last:
        if kind == "weekly" and d.weekday() == 4:
            out.append(d)
        elif kind == "biweekly" and d.weekday() == 4 and ((d - first).days // 7) % 2 == phase:
            out.append(d)
        d += dt.timedelta(days=1)
    if kind in ("semimonthly", "month_end", "25th"):
        out = []
        y, m = first.year, first.month
        while dt.date(y, m, 1) <= last:
            nxt = dt.date(y + m // 12, m % 12 + 1, 1)
            end = nxt - dt.timedelta(days=1)
            days = {"semimonthly": [dt.date(y, m, 15), end], "month_end": [end], "25th": [dt.date(y, m, 25)]}[kind]
            out += [business_day_before(x) for x in days]
            y, m = nxt.year, nxt.month
    return sorted(x for x in out if first <= x <= last)


class Payer:
    def __init__(self, world, i):
        key = (world, i)
        self.id = f"cus_{world}_{i:06d}"
        r = u(key, "country")
        acc = 0.0
        for c, z, cur, w in WIDE_COUNTRIES if VARIANT == "wide" else COUNTRIES:
            acc += w
            if r < acc:
                break
        self.country, self.tz, self.currency = c, tz(z), cur
        self.brand = "visa" if u(key, "brand") < 0.6 else "mastercard"
        self.funding = "credit" if u(key, "funding") < 0.3 else "debit"
        self.price = [999, 1999, 2999, 4999][int(u(key, "price") * 4)]
        self.bill_day = 1 + int(u(key, "billday") * 28)
        self.signup = (START - dt.timedelta(days=int(u(key, "tenure") * 900))).date()
        self.expiry_month = int(u(key, "expiry") * 36)  # months after START
        # wide: a billing hour of the payer's local day, and 3 % of cards lost or stolen
        # some time in the year (then declined until the payer updates it, like an expired one).
        self.bill_hour = int(u(key, "billhour") * 24) if VARIANT == "wide" else None
        self.lost_at = None
        if VARIANT == "wide" and u(key, "lost") < 0.03:
            self.lost_at = START + dt.timedelta(hours=int(u(key, "lost_at") * 24 * 365))
            self.lost_code = "stolen_card" if u(key, "lost_code") < 0.5 else "lost_card"
        if c in ("US", "AU"):
            r = u(key, "schedule")
            kind = "weekly" if r < 0.15 else "biweekly" if r < 0.65 else "semimonthly"
        elif c == "JP":
            kind = "25th"
        elif c == "BR":
            kind = "semimonthly"
        else:
            kind = "month_end" if u(key, "schedule") < 0.8 else "25th"
        first, last = START.date() - dt.timedelta(days=40), START.date() + dt.timedelta(days=DAYS)
        self.pays = pay_days(kind, int(u(key, "phase") * 2), first, last)
        period = {"weekly": 7, "biweekly": 14, "semimonthly": 15.2, "month_end": 30.4, "25th": 30.4}[kind]
        # Pay per period in multiples of the price; credit cards have a limit instead.
        income = self.price * (3 + 25 * u(key, "income") ** 2)
        if self.funding == "credit":
            income *= 4
        # The balance falls below the price after a share q of the period (strugglers early).
        q = 0.6 + 1.2 * u(key, "struggle") ** 0.7
        decay = math.log(income / self.price) / (q * period)
        rent = income * (0.25 if kind in ("month_end", "25th") else 0.5) * u(key, "rent")
        self.first_day = first
        self.start_balance, self.income, self.rent = [], income, rent
        self.payset = set(self.pays)
        b = income * 0.5
        rng = random.Random(repr(key))
        d = first
        while d <= last:
            self.start_balance.append(b)
            if d in self.payset:
                b += income
            if d.day == 1:
                b -= rent
            b = max(b, 0.0) * math.exp(-decay * math.exp(rng.gauss(0, 0.3)))
            d += dt.timedelta(days=1)

    def local(self, t):
        return t.astimezone(self.tz)

    def tenure(self, t):
        """Days since signup, by UTC date; never negative (the wide variant charges a payer
        east of UTC on their signup day while it is still the day before in UTC)."""
        return max(0, (t.date() - self.signup).days)

    def balance(self, t, topups):
        loc = self.local(t)
        d = (loc.date() - self.first_day).days
        if d < 0 or d >= len(self.start_balance):
            return 0.0
        b = self.start_balance[d]
        h = loc.hour
        if h >= 3 and loc.date() in self.payset:
            b += self.income
        if h >= 9 and loc.day == 1:
            b -= self.rent
        if h >= 12:
            nxt = self.start_balance[d + 1] if d + 1 < len(self.start_balance) else b
            b = nxt
        return max(b, 0.0) + sum(a for at, a in topups if at <= t)

    def expiry(self):
        m = self.expiry_month
        y, mo = 2025 + m // 12, m % 12 + 1
        return dt.datetime(y, mo, 1, tzinfo=self.tz).astimezone(dt.timezone.utc)

    def dead_since(self):
        """When the card stopped working (expired, or lost or stolen): the code, and the time."""
        exp = self.expiry()
        if self.lost_at is not None and self.lost_at < exp:
            return self.lost_code, self.lost_at
        return "expired_card", exp


class Dunning:
    """One failed payment, as the world sees it while some strategy works on it."""

    def __init__(self, payer, pid, failed_at, amount):
        self.payer, self.pid, self.amount = payer, pid, amount
        self.attempts = []  # (time, outcome, code, network_code, channel, updated)
        self.topups, self.messages, self.cost = [], [], 0.0
        self.updated_at, self.cancelled, self.recovered_at = None, False, None
        self.suspicious_until = None
        self.outage_until = None
        self.window_end = failed_at + WINDOW
        self.charge(failed_at, "none")

    def message(self, t, channel):
        """Send a message at t: top-ups, cancellations, and updates of an expired card."""
        if channel == "none" or self.cancelled:
            return
        key = (self.payer.id, self.pid, channel, t.isoformat())
        self.cost += MESSAGE_COST[channel]
        self.messages.append((t, channel))
        if channel not in ("email", "sms"):
            return  # push and in-app reach nobody in this world
        if u(key, "cancel") < (0.03 if channel == "sms" else 0.005):
            self.cancelled = True
            return
        if u(key, "topup") < (0.18 if channel == "sms" else 0.12):
            self.topups.append((t, self.amount))

    def updated_by(self, t):
        """Whether the payer updated an expired card by t (3 % a day, more the day after a message)."""
        if self.updated_at is not None:
            return self.updated_at <= t
        exp = self.payer.dead_since()[1]
        start = max(exp, self.attempts[0][0])
        d = start
        while d <= t:
            p = 0.03
            for mt, ch in self.messages:
                if d - dt.timedelta(days=1) < mt <= d:
                    p += 0.20 if ch == "email" else 0.30
            if u(self.payer.id, "update", d.date().isoformat(), int((d - start).total_seconds() // 86400)) < p:
                self.updated_at = d
                return True
            d += dt.timedelta(days=1)
        return False

    def charge(self, t, channel):
        p, key = self.payer, (self.payer.id, t.replace(minute=0, second=0).isoformat())
        updated_now = bool(self.attempts) and self.updated_by(t) and not any(a[5] for a in self.attempts)
        loc = p.local(t)
        code = None
        dead, since = p.dead_since()
        if t >= since and not (self.updated_by(t) if self.attempts else False):
            code = dead
        elif self.outage_until and t < self.outage_until:
            code = "issuer_not_available"
        elif u(key, "outage") < 0.015:
            code = "issuer_not_available"
            self.outage_until = t + dt.timedelta(hours=-4 * math.log(1 - u(key, "outage_len")))
        elif self.suspicious_until and t < self.suspicious_until:
            code = "do_not_honor"
        elif u(key, "risk") < (0.06 if loc.hour < 5 else 0.02):
            code = "do_not_honor"
            self.suspicious_until = t + dt.timedelta(hours=-30 * math.log(1 - u(key, "risk_len")))
        elif p.balance(t, self.topups) < self.amount:
            code = "do_not_honor" if u(p.id, "mask", loc.date().isoformat()) < 0.2 else "insufficient_funds"
        outcome = "failed" if code else "succeeded"
        self.attempts.append((t, outcome, code, NETWORK[code] if code else "", channel, updated_now))
        if len(self.attempts) > 1:
            self.cost += ATTEMPT_COST
        if outcome == "succeeded":
            self.recovered_at = t
        return outcome == "succeeded"

    @property
    def open(self):
        return self.recovered_at is None and not self.cancelled


NETWORK = {"insufficient_funds": "51", "do_not_honor": "05", "issuer_not_available": "91", "expired_card": "54",
           "lost_card": "41", "stolen_card": "43"}


def charges(payer, last):
    """The payer's monthly charge times at 08:00 UTC on the billing day (wide: at the payer's
    billing hour of the local day), up to `last`."""
    out, y, m = [], START.year, START.month
    while True:
        day = min(payer.bill_day, 28)
        t = dt.datetime(y, m, day, 8, tzinfo=dt.timezone.utc)
        if payer.bill_hour is not None:
            t = dt.datetime(y, m, day, payer.bill_hour, tzinfo=payer.tz).astimezone(dt.timezone.utc)
        if t > last:
            return out
        out.append(t)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def logging_retries(d, pid, policy="random"):
    """The merchant's retry plan: 1–4 days, then 2–6 days apart, ≤ 4 within 21 days
    (`random`); or a plain schedule on days 2, 4, 7 and 11 at the failure's time of day,
    with an email before each retry (`fixed`) or no message (`fixed-silent`)."""
    if policy == "random-short":
        # Short and many: 2–48 h after the failure, then 12–72 h apart, ≤ 6 within 21 days.
        out, t, key = [], d.attempts[0][0], (d.payer.id, pid, "log")
        for k in range(6):
            lo, hi = (2, 48) if k == 0 else (12, 72)
            t = t + dt.timedelta(hours=int(lo + u(key, k, "gap") * (hi - lo)))
            if t >= d.window_end:
                break
            r = u(key, k, "channel")
            out.append((t, "none" if r < 0.4 else "email" if r < 0.85 else "sms"))
        return out
    if policy != "random":
        out = []
        for day in (2, 4, 7, 11):
            t = d.attempts[0][0] + dt.timedelta(days=day)
            if t >= d.window_end:
                break
            out.append((t, "email" if policy == "fixed" else "none"))
        return out
    out, t, key = [], d.attempts[0][0], (d.payer.id, pid, "log")
    for k in range(4):
        lo, hi = (1, 4) if k == 0 else (2, 6)
        t = t + dt.timedelta(hours=int(24 * lo + u(key, k, "gap") * 24 * (hi - lo)))
        if t >= d.window_end:
            break
        r = u(key, k, "channel")
        out.append((t, "none" if r < 0.4 else "email" if r < 0.85 else "sms"))
    return out


HEADER = ["attempt_id", "payment_id", "customer_id", "attempted_at", "attempt_number", "amount_minor", "currency",
          "payment_method", "card_brand", "card_funding", "country", "timezone", "outcome", "decline_code",
          "network_code", "channel", "payment_method_updated", "billing_interval", "tenure_days", "payment_method_id"]
# The closed loop's history: recoup's own attempts, with its column marking the retries the
# platform made because the payer updated (as `recoup history from-log` writes it).
LOOP_HEADER = HEADER + ["update_triggered"]


def write_attempts(w, p, pid, attempts, card, triggered=None):
    """One payment's attempts as contract-v1 rows; the payer's card count after them, and the rows written.
    With `triggered` (the attempt numbers made because the payer updated), recoup's column
    `update_triggered` too (LOOP_HEADER)."""
    for k, (at, outcome, code, net, ch, upd) in enumerate(attempts):
        if upd:
            card += 1
        masked = code and u(p.id, pid, k, "raw") < 0.4
        row = [f"att_{pid}_{k}", pid, p.id, at.strftime("%Y-%m-%dT%H:%M:%SZ"), k, p.price, p.currency, "card",
               p.brand, p.funding, p.country, p.tz.key, outcome, "" if (masked or not code) else code,
               net if code else "", ch, "true" if upd else "false", "month",
               p.tenure(at), f"pm_{p.id}_{card}"]
        if triggered is not None:
            row.append("true" if k in triggered else "false")
        w.writerow(row)
    return card, len(attempts)


def history(args):
    last = START + dt.timedelta(days=365)
    rows = 0
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(args.payers):
            p = Payer(f"h{args.seed}", i)
            card = 0
            for n, t in enumerate(charges(p, last)):
                pid = f"pay_{p.id}_{n:02d}"
                d = Dunning(p, pid, t, p.price)
                if d.open:
                    for rt, ch in logging_retries(d, pid, args.log_policy):
                        d.message(rt - dt.timedelta(hours=1), ch)
                        if not d.open:
                            break
                        d.charge(rt, ch)
                        if not d.open:
                            break
                card, n_rows = write_attempts(w, p, pid, d.attempts, card)
                rows += n_rows
                if d.cancelled or (not d.recovered_at and u(p.id, pid, "churn") < 0.5):
                    break
                if d.updated_at is not None:
                    # The new card replaces the dead one for the next charges.
                    p.expiry_month += 36
                    p.lost_at = None
            if i and i % 5000 == 0:
                print(f"  {i} payers, {rows} rows", file=sys.stderr)
    print(f"wrote {rows} attempts of {args.payers} payers to {args.out}", file=sys.stderr)


def first_failures(seed, payers, world="e"):
    last = START + dt.timedelta(days=330)
    out = []
    for i in range(payers):
        p = Payer(f"{world}{seed}", i)
        past = []
        for n, t in enumerate(charges(p, last)):
            probe = Dunning(p, f"pay_{p.id}_{n:02d}", t, p.price)
            if not probe.open:
                past.append(t)
                continue
            out.append((p, n, t, past))
            break
    return out


def dunning(case):
    """The world's state of a case's failed payment, fresh for one strategy."""
    p, n, t, _ = case
    return Dunning(p, f"pay_{p.id}_{n:02d}", t, p.price)


def fixed(case, days, channel):
    p, _, t, _ = case
    d = dunning(case)
    for day in days:
        loc = (p.local(t) + dt.timedelta(days=day)).replace(hour=9, minute=0)
        rt = loc.astimezone(dt.timezone.utc)
        if rt >= d.window_end or not d.open:
            break
        d.message(rt - dt.timedelta(hours=1), channel)
        # Lost and stolen cards are not retried until the payer updates them (network rule).
        if d.open and not (d.attempts[-1][2] in HARD and not d.updated_by(rt)):
            d.charge(rt, channel)
    return d


def ts(t):
    from google.protobuf import timestamp_pb2
    x = timestamp_pb2.Timestamp()
    x.FromDatetime(t.astimezone(dt.timezone.utc).replace(tzinfo=None))
    return x


MINIMAL = False


def request(pb, case, d, now, asks):
    p = case[0]
    if MINIMAL:
        # A platform that sends only what the contract requires: no card details, tenure,
        # earlier payments or asks.
        pay = pb.Payment(payment_id=d.pid, customer_id=p.id, amount_minor=d.amount, currency=p.currency, payment_method="card",
                         country=p.country)
        atts = [pb.Attempt(attempted_at=ts(a[0]), network_code=a[3], channel=a[4], payment_method_updated=a[5]) for a in d.attempts]
        updated = d.updated_at is not None and d.updated_at <= now and d.updated_at > d.attempts[-1][0]
        return pb.DecideRequest(payment=pay, attempts=atts, payment_method_updated=updated, now=ts(now))
    pay = pb.Payment(payment_id=d.pid, customer_id=p.id, amount_minor=d.amount, currency=p.currency, payment_method="card",
                     card_brand=p.brand, card_funding=p.funding, country=p.country, timezone=p.tz.key,
                     billing_interval="month", tenure_days=p.tenure(d.attempts[0][0]))
    atts = [pb.Attempt(attempted_at=ts(a[0]), network_code=a[3], channel=a[4], payment_method_updated=a[5]) for a in d.attempts]
    past = [pb.PastPayment(attempts=[pb.PastAttempt(attempted_at=ts(t), outcome="succeeded")]) for t in case[3][-12:]]
    updated = d.updated_at is not None and d.updated_at <= now and d.updated_at > d.attempts[-1][0]
    return pb.DecideRequest(payment=pay, attempts=atts, payment_method_updated=updated, past_payments=past, now=ts(now),
                            asks=[pb.Ask(sent_at=ts(t), channel=c) for t, c in asks])


def step(s, item, chan):
    d = s["d"]
    if item.WhichOneof("result") == "error":
        s.setdefault("errors", []).append(item.error)
        s["done"] = True
        return
    r = item.decision
    if r.action == 1:  # RETRY
        rt = r.retry_at.ToDatetime(tzinfo=dt.timezone.utc)
        ch = chan.get(r.channel, "none")
        if rt >= d.window_end or rt <= d.attempts[-1][0]:
            s["done"] = True
            return
        if ch != "none":
            send = r.send_at.ToDatetime(tzinfo=dt.timezone.utc) if r.HasField("send_at") else rt - dt.timedelta(hours=1)
            d.message(send, ch)
        if d.open:
            before, later = d.attempts[-1][2], len(d.attempts) > 1
            if before in HARD and not d.updated_by(rt):
                s["violations"] = s.get("violations", 0) + 1
            spacing = (rt - d.attempts[-1][0]).total_seconds() / 3600
            ok = d.charge(rt, ch)
            s["chosen"].append((r.p_success, ok, before, later, spacing))
        s["now"] = rt + dt.timedelta(minutes=1)
        s["asks"] = []
        s["done"] = not d.open
        return
    # DO_NOT_RETRY: stop, ask (now), or wait (for an update, or until the next ask's time).
    if r.next_step == 2:  # STOP
        s["done"] = True
        return
    planned = r.ask.send_at.ToDatetime(tzinfo=dt.timezone.utc) if r.HasField("ask") and r.ask.HasField("send_at") else None
    ask = chan.get(r.ask_channel, "none") if r.next_step == 3 else "none"
    now = s["now"]
    if ask != "none":
        d.message(now, ask)
        s["asks"].append((now, ask))
        wake = now + dt.timedelta(days=1)
    else:
        wake = planned if planned and planned > now else now + dt.timedelta(days=1)
    if not d.open or wake >= d.window_end and not d.updated_by(d.window_end):
        s["done"] = True
        return
    # The platform calls again when the payer updates the card, else at the wake-up time.
    d.updated_by(wake)
    upd = d.updated_at
    s["now"] = upd + dt.timedelta(minutes=5) if upd and now < upd <= wake else wake
    if s["now"] >= d.window_end:
        s["done"] = True


def evaluate(args):
    pb, stub = connect(args)
    cases = first_failures(args.seed, args.payers)
    print(f"{len(cases)} first failures of {args.payers} payers (world e{args.seed})", file=sys.stderr)
    schedules = [("daily x4", [1, 2, 3, 4]), ("every 3 days x4", [3, 6, 9, 12]), ("1/3/5/7", [1, 3, 5, 7]),
                 ("2 weeks x8", [1, 2, 4, 6, 8, 10, 12, 14])]
    results = {}
    for name, days in schedules:
        for ch in ("email", "none"):
            results[f"{name}{'' if ch == 'email' else ' (no message)'}"] = [fixed(c, days, ch) for c in cases]
    states = learned_run(cases, stub, pb)
    results["learned"] = [s["d"] for s in states]
    if args.loop_out:
        # The closed loop: what the learned policy did, as the merchant's history would record it
        # (each payer's earlier paid charges, then the dunned payment's attempts).
        with open(args.loop_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOOP_HEADER)
            for s in states:
                p, n, _, past = s["case"]
                for m, t in enumerate(past):
                    write_attempts(w, p, f"pay_{p.id}_{m:02d}", [(t, "succeeded", None, "", "none", False)], 0, set())
                # Contract v1's channel is the message sent since the previous attempt: an ask
                # (a message no retry followed at once) counts for the next attempt that sent none.
                atts = list(s["d"].attempts)
                for k in range(1, len(atts)):
                    if atts[k][4] == "none":
                        sent = [c for t, c in s["d"].messages if atts[k - 1][0] < t <= atts[k][0]]
                        if sent:
                            atts[k] = atts[k][:4] + (sent[-1],) + atts[k][5:]
                write_attempts(w, p, s["d"].pid, atts, 0, s["triggered"] if args.loop_marks else set())
        print(f"wrote the learned policy's attempts to {args.loop_out}", file=sys.stderr)
    chosen = [x for s in states for x in s["chosen"]]

    def net(d):
        return (d.amount if d.recovered_at else 0) - d.cost

    print(f"\n{'strategy':<32} {'recovered':>9} {'net/payment':>12} {'retries':>8} {'messages':>9}")
    for name, ds in results.items():
        print(f"{name:<32} {100 * sum(1 for d in ds if d.recovered_at) / len(ds):8.1f}% {sum(map(net, ds)) / len(ds):12.1f} "
              f"{sum(len(d.attempts) - 1 for d in ds) / len(ds):8.2f} {sum(len(d.messages) for d in ds) / len(ds):9.2f}")
    best = max((n for n in results if n != "learned"), key=lambda n: sum(map(net, results[n])))
    diff = [net(a) - net(b) for a, b in zip(results["learned"], results[best])]
    rng = random.Random(1)
    boots = sorted(sum(diff[rng.randrange(len(diff))] for _ in diff) / len(diff) for _ in range(300))
    print(f"\nlearned − best fixed ({best}): {sum(diff) / len(diff):.1f} per payment, 95 % [{boots[7]:.1f}, {boots[292]:.1f}]")
    if args.detail:
        # Where the two differ: messages by channel, payers lost to a message, and expired cards.
        for name in ("learned", best):
            ds = results[name]
            per = {c: n / len(ds) for c, n in sorted(collections.Counter(c for d in ds for _, c in d.messages).items())}
            exp = [d for d in ds if d.attempts[0][2] == "expired_card"]
            print(f"  {name}: messages a payment {', '.join(f'{c} {v:.2f}' for c, v in per.items())}; cancelled "
                  f"{100 * sum(d.cancelled for d in ds) / len(ds):.2f} %; expired cards {len(exp)}, recovered "
                  f"{100 * sum(1 for d in exp if d.recovered_at) / max(len(exp), 1):.1f} %, net "
                  f"{sum(map(net, exp)) / max(len(exp), 1):.1f}, other payments net "
                  f"{sum(net(d) for d in ds if d.attempts[0][2] != 'expired_card') / max(len(ds) - len(exp), 1):.1f}")
    bins = [[0.0, 0.0, 0] for _ in range(10)]
    for p, ok, *_ in chosen:
        b = bins[min(int(p * 10), 9)]
        b[0] += p
        b[1] += ok
        b[2] += 1
    ece = sum(abs(b[0] - b[1]) for b in bins) / max(len(chosen), 1)
    print(f"chosen retries: {len(chosen)}, predicted {sum(c[0] for c in chosen) / max(len(chosen), 1):.3f}, "
          f"realised {sum(c[1] for c in chosen) / max(len(chosen), 1):.3f}, ECE {ece:.3f}")
    for code in sorted({c[2] for c in chosen}):
        for later in (False, True):
            cs = [c for c in chosen if c[2] == code and c[3] == later]
            if len(cs) >= 30:
                print(f"  after {code:<22} {'later' if later else 'first'} {len(cs):6} retries  predicted "
                      f"{sum(c[0] for c in cs) / len(cs):.3f}  realised {sum(c[1] for c in cs) / len(cs):.3f}")
                if args.detail:
                    # By the hours since the attempt before (the log's spacing is where a policy departs most).
                    for lo, hi in ((0, 24), (24, 48), (48, 72), (72, 96), (96, 168), (168, 1e9)):
                        b = [c for c in cs if lo <= c[4] < hi]
                        if len(b) >= 20:
                            print(f"      {lo:>4}–{hi if hi < 1e9 else '':<4} h after the attempt before {len(b):6} retries  "
                                  f"predicted {sum(c[0] for c in b) / len(b):.3f}  realised {sum(c[1] for c in b) / len(b):.3f}")
    violations = sum(s.get("violations", 0) for s in states)
    print(f"rule violations (a lost or stolen card retried before the payer updated it): {violations}")
    errors = [e for s in states for e in s.get("errors", [])]
    print(f"request errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    if errors or violations:
        sys.exit(1)


def connect(args):
    import grpc
    sys.path.insert(0, args.gen)
    from recoup.v1 import recoup_pb2 as pb, recoup_pb2_grpc as rpc
    size = [("grpc.max_receive_message_length", 1 << 28), ("grpc.max_send_message_length", 1 << 28)]
    return pb, rpc.RetryDeciderStub(grpc.insecure_channel(args.addr, options=size))


def probe(args):
    """Score one retry per first failure at a fixed delay, no message (the engine held to that
    hour), and charge it: predicted against realised per decline code, away from the policy's
    own choices. `--world h` probes the history's world (the draw the log came from)."""
    pb, stub = connect(args)
    reqs, ds = [], []
    for c in first_failures(args.seed, args.payers, args.world):
        t = c[2]
        d = dunning(c)
        at = (t + dt.timedelta(hours=args.hours)).replace(minute=0, second=0)
        r = request(pb, c, d, t + dt.timedelta(minutes=1), [])
        r.constraints.earliest.CopyFrom(ts(at))
        r.constraints.latest.CopyFrom(ts(at))
        r.constraints.allowed_channels.append("none")
        reqs.append(r)
        ds.append(d)
    out = {}
    for d, item in zip(ds, decide_batched(stub, pb, reqs)):
        if item.WhichOneof("result") != "decision" or item.decision.action != 1:
            continue
        o = out.setdefault(d.attempts[0][2], [0, 0.0, 0])
        o[0] += 1
        o[1] += item.decision.p_success
        o[2] += d.charge(item.decision.retry_at.ToDatetime(tzinfo=dt.timezone.utc), "none")
    print(f"a retry {args.hours} h after each first failure of world {args.world}{args.seed}, no message:")
    for code, (n, p, ok) in sorted(out.items()):
        print(f"  after {code:<22} {n:6} retries  predicted {p / n:.3f}  realised {ok / n:.3f}")


def score_log(args):
    """Score a history's first retries (another draw than the model's, or its own) at their
    logged time and channel: predicted against logged outcome per network code and channel."""
    import pandas as pd

    def stamp(t):
        return ts(t.to_pydatetime())

    pb, stub = connect(args)
    h = pd.read_csv(args.history, dtype={"network_code": str, "decline_code": str}, keep_default_na=False)
    h["t"] = pd.to_datetime(h.attempted_at)
    h = h.sort_values(["customer_id", "t", "attempt_number"])
    reqs, keys = [], []
    for cus, c in h.groupby("customer_id", sort=False):
        payments = [g for _, g in c.groupby("payment_id", sort=False)]
        for k, g in enumerate(payments):
            if len(g) < 2:
                continue
            a0, a1 = g.iloc[0], g.iloc[1]
            pay = pb.Payment(payment_id=a0.payment_id, customer_id=cus, amount_minor=int(a0.amount_minor), currency=a0.currency,
                             payment_method="card", card_brand=a0.card_brand, card_funding=a0.card_funding, country=a0.country,
                             timezone=a0.timezone, billing_interval="month", tenure_days=int(a0.tenure_days))
            past = [pb.PastPayment(attempts=[pb.PastAttempt(attempted_at=stamp(r.t), outcome=r.outcome,
                                                            decline_code=r.decline_code or r.network_code) for r in e.itertuples()])
                    for e in payments[max(0, k - 12):k]]
            r = pb.DecideRequest(payment=pay, now=stamp(a0.t + pd.Timedelta(minutes=1)), past_payments=past,
                                 attempts=[pb.Attempt(attempted_at=stamp(a0.t), decline_code=a0.decline_code,
                                                      network_code=a0.network_code, channel="none")],
                                 payment_method_updated=a1.payment_method_updated in (True, "true"))
            r.constraints.earliest.CopyFrom(stamp(a1.t))
            r.constraints.latest.CopyFrom(stamp(a1.t))
            r.constraints.allowed_channels.append(a1.channel)
            reqs.append(r)
            first = all(e.outcome.iloc[0] == "succeeded" for e in payments[:k])
            days = round((a1.t - a0.t).total_seconds() / 86400)
            keys.append(((a0.network_code, a1.channel), (a0.network_code, first, days), a1.outcome == "succeeded"))
    by_channel, by_days = {}, {}
    for (kc, kd, ok), item in zip(keys, decide_batched(stub, pb, reqs)):
        if item.WhichOneof("result") == "decision" and item.decision.action == 1:
            for table, key in ((by_channel, kc), (by_days, kd)):
                o = table.setdefault(key, [0, 0.0, 0])
                o[0] += 1
                o[1] += item.decision.p_success
                o[2] += ok
    print(f"first retries of {args.history} at their logged time and channel, by network code and channel:")
    for key, (n, p, ok) in sorted(by_channel.items()):
        if n >= 30:
            print(f"  {key[0]:>3} {key[1]:<6} {n:6} retries  predicted {p / n:.3f}  logged {ok / n:.3f}")
    print("by network code, whether it is the payer's first failed payment, and days after the failure:")
    for key, (n, p, ok) in sorted(by_days.items()):
        if n >= 30:
            first = "first failure" if key[1] else "after others"
            print(f"  {key[0]:>3} {first:<13} {key[2]:2} d {n:6} retries  predicted {p / n:.3f}  logged {ok / n:.3f}")

def decide_batched(stub, pb, reqs):
    """Every request's answer, in order, in DecideBatch calls of at most 1,000 (a batch's
    answers must fit one 4 MiB message; recoup leaves the items past that undecided)."""
    for k in range(0, len(reqs), 1000):
        yield from stub.DecideBatch(pb.DecideBatchRequest(requests=reqs[k:k + 1000])).items


def learned_run(cases, stub, pb):
    """Follow recoup's answers on every case, one decision per open case a round: each
    case's state (its dunning, chosen retries and any refused requests)."""
    states = []
    for c in cases:
        d = dunning(c)
        states.append({"case": c, "d": d, "now": c[2] + dt.timedelta(minutes=1), "asks": [], "done": not d.open, "chosen": [],
                       "triggered": set()})
    chan = {0: "none", 1: "none", 2: "email", 3: "sms", 4: "in_app", 5: "push"}
    for rnd in range(60):
        todo = [s for s in states if not s["done"]]
        if not todo:
            break
        reqs = [request(pb, s["case"], s["d"], s["now"], s["asks"]) for s in todo]
        for s, req, item in zip(todo, reqs, decide_batched(stub, pb, reqs)):
            n = len(s["d"].attempts)
            step(s, item, chan)
            if req.payment_method_updated and len(s["d"].attempts) > n:
                s["triggered"].add(n)  # a retry the platform asked for because the payer updated
        print(f"  decision round {rnd}: {len(todo)} payments open", file=sys.stderr)
    return states


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("history", help="write the merchant's history (contract v1 CSV)")
    h.add_argument("out")
    h.add_argument("--payers", type=int, default=20000)
    h.add_argument("--seed", type=int, default=3)
    h.add_argument("--log-policy", choices=["random", "random-short", "fixed", "fixed-silent"], default="random",
                   help="the merchant's retries: random delays and messages (the default), shorter and more of "
                        "them (random-short: 2-48 h, then 12-72 h apart, up to six), or a plain schedule "
                        "(days 2, 4, 7, 11 at the failure's time of day) with an email before each retry or none")
    e = sub.add_parser("evaluate", help="dunn another draw's first failures: fixed schedules and recoup over gRPC")
    e.add_argument("--payers", type=int, default=20000)
    e.add_argument("--seed", type=int, default=11)
    e.add_argument("--addr", default="127.0.0.1:50051")
    e.add_argument("--gen", required=True, help="directory of the Python code grpc_tools generated from proto/")
    e.add_argument("--loop-out", help="also write the learned policy's attempts as contract-v1 CSV (to retrain on)")
    e.add_argument("--no-loop-marks", dest="loop_marks", action="store_false",
                   help="leave update_triggered false in --loop-out (what a history without recoup's column reads as)")
    e.add_argument("--detail", action="store_true", help="the chosen retries' calibration also by hours since the attempt before")
    e.add_argument("--minimal", action="store_true",
                   help="requests with only what the contract requires (no card brand or funding, time zone, tenure, "
                        "billing interval, earlier payments or asks): a platform that sends little")
    pr = sub.add_parser("probe", help="score one retry a fixed delay after each first failure, no message, and charge it")
    pr.add_argument("--hours", type=int, default=48)
    pr.add_argument("--world", default="e", help="e: the evaluation's draws; h: the history's")
    sl = sub.add_parser("score-log", help="score a history's first retries at their logged time and channel")
    sl.add_argument("history")
    for x in (pr, sl):
        x.add_argument("--payers", type=int, default=20000)
        x.add_argument("--seed", type=int, default=11)
        x.add_argument("--addr", default="127.0.0.1:50051")
        x.add_argument("--gen", required=True, help="directory of the Python code grpc_tools generated from proto/")
    for x in (h, e, pr, sl):
        x.add_argument("--variant", choices=["base", "wide"], default="base",
                       help="the world's dynamics: base, or wide (payers in India, Australia, Japan and Brazil too, "
                            "charges at a billing hour of the payer's day, 3 %% of cards lost or stolen)")
    a = ap.parse_args()
    global VARIANT, MINIMAL
    VARIANT = a.variant
    MINIMAL = getattr(a, "minimal", False)
    {"history": history, "evaluate": evaluate, "probe": probe, "score-log": score_log}[a.cmd](a)


if __name__ == "__main__":
    main()
