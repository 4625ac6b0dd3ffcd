-- 0001: Guard's audit store: every journal record of guardd, as the outbox
-- publishes it (docs/events.md).  Applied by `guardctl db migrate`, in one
-- transaction; never edit it once applied (add 0002_..., ...).
--
-- decisions: every record that is not a review (refusals and shadow
-- refusals of the module, guardd's risk decisions, breaker transitions,
-- guardrail records, guardd's lifecycle and policy records), one row per
-- record id, partitioned by month of its time; reviews: the analysts'
-- reviews, one row per record (its chain hash).  Both keep the whole
-- record as jsonb with its place in the journal and its chain hash; the
-- columns are the record's members of docs/soc.md, copied for the indexes
-- and for SQL.

-- (the helpers are plain SQL expressions, not STRICT, so that PostgreSQL
-- inlines them into guard_ingest's INSERT)

-- a member that is a JSON string, as text; NULL otherwise
CREATE FUNCTION guard_str(r jsonb, k text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(r -> k) = 'string' THEN r ->> k END
$$;

-- a member that is a JSON integer, as bigint; NULL otherwise
CREATE FUNCTION guard_int(r jsonb, k text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(r -> k) = 'number'
                 AND (r ->> k) ~ '^-?[0-9]{1,18}$'
                THEN (r ->> k)::bigint END
$$;

-- the record's time: ts_ms when it is an integer >= 0, else the epoch
CREATE FUNCTION guard_ts(r jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN guard_int(r, 'ts_ms') >= 0
                THEN to_timestamp(guard_int(r, 'ts_ms') / 1000.0)
                ELSE to_timestamp(0) END
$$;

-- a refusal as guardctl blocked lists them (docs/soc.md "The records"):
-- not a review, and outcome deny or shadow_deny, or a reason with a
-- status of 400 or more
CREATE FUNCTION guard_is_refusal(r jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(guard_str(r, 'kind'), '') <> 'review'
       AND (coalesce(guard_str(r, 'outcome') IN ('deny', 'shadow_deny'), false)
            OR (guard_str(r, 'reason') IS NOT NULL
                AND coalesce(guard_int(r, 'status') >= 400, false)))
$$;

CREATE TABLE decisions (
    key            text        NOT NULL, -- the record id, else its hash
    ts             timestamptz NOT NULL, -- ts_ms as a time (epoch: none)
    id             text,                 -- id (or decision_id)
    kind           text        NOT NULL, -- kind, else "decision"
    ts_ms          bigint,
    tenant         text,
    subject        text,
    client_ip      text,
    method         text,
    route          text,
    traceparent    text,
    stage          text,
    outcome        text,
    status         integer,
    reason         text,
    score          double precision,
    signals        jsonb,
    thresholds     jsonb,
    rules          jsonb,
    policy_version text,
    node           text,
    source         text,
    shadow_reason  text,
    latency_ms     double precision,
    refusal        boolean     NOT NULL, -- listed by guardctl blocked
    segment        text        NOT NULL, -- journal-NNNNNN.jsonl
    line           bigint      NOT NULL, -- its line, from 1
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL, -- the chain hash
    record         jsonb       NOT NULL, -- the record as journaled
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, ts)
) PARTITION BY RANGE (ts);

-- rows whose month has no partition yet (guard_ingest creates them first)
CREATE TABLE decisions_default PARTITION OF decisions DEFAULT;

-- the SOC queries: blocked --tenant/--subject/--reason/--since (newest
-- first), show ID (any case, by its first characters), audit verify (the
-- journal's order)
CREATE INDEX decisions_tenant_ts ON decisions (tenant, ts DESC);
CREATE INDEX decisions_subject_ts ON decisions (subject, ts DESC);
CREATE INDEX decisions_reason_ts ON decisions (reason, ts DESC);
CREATE INDEX decisions_refusal_ts ON decisions (ts DESC) WHERE refusal;
CREATE INDEX decisions_id ON decisions (lower(id) text_pattern_ops);
CREATE INDEX decisions_place ON decisions (segment, line);

CREATE TABLE reviews (
    hash       text        PRIMARY KEY, -- the chain hash (reviews have no id)
    review_of  text        NOT NULL,
    verdict    text,
    analyst    text,
    note       text,
    ts_ms      bigint,
    ts         timestamptz NOT NULL,
    segment    text        NOT NULL,
    line       bigint      NOT NULL,
    prev_hash  text        NOT NULL,
    record     jsonb       NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_of ON reviews (lower(review_of) text_pattern_ops);
CREATE INDEX reviews_place ON reviews (segment, line);

-- the partition of decisions for the month of t (UTC), created if missing
CREATE FUNCTION guard_partition(t timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m timestamptz := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'decisions_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF decisions '
                       'FOR VALUES FROM (%L) TO (%L)', name, m,
                       m + interval '1 month');
    END IF;
END
$$;

-- guard_ingest(batch): the outbox's one call per batch, inside its own
-- transaction.  batch is a JSON array of {"record": {...the journal record,
-- with prev_hash and hash}, "segment": "journal-000001.jsonl", "line": N}.
-- A record already stored (the same id and time; a review: the same hash)
-- is left as it is and counted as a duplicate.
CREATE FUNCTION guard_ingest(batch jsonb)
RETURNS TABLE (inserted bigint, duplicates bigint)
LANGUAGE plpgsql AS $$
DECLARE
    total bigint := jsonb_array_length(batch);
    n_dec bigint;
    n_rev bigint;
BEGIN
    PERFORM guard_partition(m)
       FROM (SELECT DISTINCT date_trunc('month', guard_ts(e -> 'record')
                                                 AT TIME ZONE 'UTC') AS m
               FROM jsonb_array_elements(batch) e
              WHERE coalesce(guard_str(e -> 'record', 'kind'), '') <> 'review') s;

    WITH ins AS (
        INSERT INTO decisions (key, ts, id, kind, ts_ms, tenant, subject,
                               client_ip, method, route, traceparent, stage,
                               outcome, status, reason, score, signals,
                               thresholds, rules, policy_version, node, source,
                               shadow_reason, latency_ms, refusal, segment,
                               line, prev_hash, hash, record)
        SELECT coalesce(guard_str(r, 'id'), guard_str(r, 'decision_id'),
                        guard_str(r, 'hash')),
               guard_ts(r),
               coalesce(guard_str(r, 'id'), guard_str(r, 'decision_id')),
               coalesce(guard_str(r, 'kind'), 'decision'),
               CASE WHEN guard_int(r, 'ts_ms') >= 0 THEN guard_int(r, 'ts_ms') END,
               guard_str(r, 'tenant'), guard_str(r, 'subject'),
               guard_str(r, 'client_ip'), guard_str(r, 'method'),
               guard_str(r, 'route'), guard_str(r, 'traceparent'),
               guard_str(r, 'stage'), guard_str(r, 'outcome'),
               CASE WHEN guard_int(r, 'status') BETWEEN -2147483648 AND 2147483647
                    THEN guard_int(r, 'status') END,
               guard_str(r, 'reason'),
               CASE WHEN jsonb_typeof(r -> 'score') = 'number'
                    THEN (r ->> 'score')::double precision END,
               r -> 'signals', r -> 'thresholds', r -> 'rules',
               guard_str(r, 'policy_version'), guard_str(r, 'node'),
               guard_str(r, 'source'), guard_str(r, 'shadow_reason'),
               CASE WHEN jsonb_typeof(r -> 'latency_ms') = 'number'
                    THEN (r ->> 'latency_ms')::double precision END,
               guard_is_refusal(r),
               e ->> 'segment', (e ->> 'line')::bigint,
               guard_str(r, 'prev_hash'), guard_str(r, 'hash'), r
          FROM jsonb_array_elements(batch) e, LATERAL (SELECT e -> 'record') x(r)
         WHERE coalesce(guard_str(r, 'kind'), '') <> 'review'
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO n_dec FROM ins;

    WITH ins AS (
        INSERT INTO reviews (hash, review_of, verdict, analyst, note, ts_ms,
                             ts, segment, line, prev_hash, record)
        SELECT guard_str(r, 'hash'), guard_str(r, 'review_of'),
               guard_str(r, 'verdict'), guard_str(r, 'analyst'),
               guard_str(r, 'note'),
               CASE WHEN guard_int(r, 'ts_ms') >= 0 THEN guard_int(r, 'ts_ms') END,
               guard_ts(r), e ->> 'segment', (e ->> 'line')::bigint,
               guard_str(r, 'prev_hash'), r
          FROM jsonb_array_elements(batch) e, LATERAL (SELECT e -> 'record') x(r)
         WHERE guard_str(r, 'kind') = 'review'
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO n_rev FROM ins;

    inserted := n_dec + n_rev;
    duplicates := total - inserted;
    RETURN NEXT;
END
$$;
