-- recoup's decision log in PostgreSQL (`recoup serve --decision-log postgres://…`).
-- Applied once by the server at start, inside a transaction that locks
-- recoup_schema_migrations, so replicas starting together apply it once.
-- The columns are those of the Parquet sink (src/decision_log.rs).

CREATE TABLE recoup_decisions (
    id            bigserial PRIMARY KEY,
    decided_at    timestamptz NOT NULL,
    source        text NOT NULL,            -- decide, decide_batch or hyperswitch
    payment_id    text NOT NULL,
    customer_id   text NOT NULL,
    model_version text NOT NULL,
    arm           text NOT NULL,            -- model, or control:<schedule>
    action        text NOT NULL,            -- RETRY or DO_NOT_RETRY
    next_step     text NOT NULL,
    retry_at      timestamptz,
    channel       text NOT NULL,
    p_success     double precision NOT NULL,
    p_recovery    double precision NOT NULL,
    propensity    double precision NOT NULL,
    request       bytea NOT NULL,           -- the recoup.v1.DecideRequest, protobuf-encoded
    writer        text NOT NULL             -- host (pod) name and process id
);
CREATE INDEX recoup_decisions_payment ON recoup_decisions (payment_id, decided_at);

CREATE TABLE recoup_outcomes (
    id                     bigserial PRIMARY KEY,
    reported_at            timestamptz NOT NULL,
    payment_id             text NOT NULL,
    customer_id            text NOT NULL,
    attempt_id             text NOT NULL,
    attempt_number         integer NOT NULL,
    attempted_at           timestamptz NOT NULL,
    outcome                text NOT NULL,   -- succeeded or failed
    decline_code           text NOT NULL,
    network_code           text NOT NULL,
    advice_code            text NOT NULL,
    channel                text NOT NULL,
    payment_method_updated boolean NOT NULL
);
CREATE INDEX recoup_outcomes_payment ON recoup_outcomes (payment_id, attempt_number);
