-- 0004: guardd computes the columns, the server stores them.  Applied by
-- `guardctl db migrate` after 0003 (never edit it once applied: add
-- 0005_..., ...).
--
-- With 0002, the server parsed each record as jsonb and took some thirty
-- members out of it with guard_str, guard_int, ... (a fifth of its time
-- per record measured with perf, bench/store.sh: docs/events.md,
-- "Figures").  Here guardd's PostgreSQL sink parses the record itself
-- (jansson, as it reads the journal) and COPYs one typed row per record
-- into this session's guard_rows, the columns already computed with the
-- same values and NULL rules as guard_ingest_staged() (guardd_sink_pg.c
-- says how; t/83-db.t ingests the same records both ways and compares
-- every column); guard_ingest_rows() then moves them into decisions and
-- reviews with the same partitions, conflicts and counts:
--
--   BEGIN;
--   COPY guard_rows (...) FROM STDIN;               -- the batch, typed
--   SELECT inserted, duplicates FROM guard_ingest_rows();
--   COMMIT;                                 -- guard_rows is empty again
--
-- What the server still computes from the record (parsed once, for the
-- record column): signals, thresholds and rules (jsonb values as they
-- are), and score or latency_ms when guardd cannot tell its value
-- (a JSON real that reads as zero: "0.0", "-0.0" or a number too small
-- for a double, which PostgreSQL refuses) - the row's num_from_record.
-- A batch with a record guardd cannot compute (a line jansson does not
-- take, not an object, ts_ms or status a JSON real) goes through 0002's
-- guard_stage and guard_ingest_staged() as before.

-- guard_rows_open(): this session's guard_rows, created if missing.
-- ON COMMIT DELETE ROWS: its rows last one transaction (a batch).  Every
-- column may be NULL: the NOT NULL of decisions and reviews decide, as
-- they did with guard_ingest_staged().
CREATE FUNCTION guard_rows_open() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.guard_rows') IS NULL THEN
        CREATE TEMPORARY TABLE guard_rows (
            review          boolean, -- guard_str(r, 'kind') = 'review'
            key             text,    -- id, else decision_id, else hash
            id              text,    -- id, else decision_id
            kind            text,    -- kind, else 'decision'
            ts_ms           bigint,  -- guard_int(r, 'ts_ms'), negative kept
            tenant          text,
            subject         text,
            client_ip       text,
            method          text,
            route           text,
            traceparent     text,
            stage           text,
            outcome         text,
            status          integer, -- guard_int(r, 'status') in int4's range
            reason          text,
            score           double precision,
            latency_ms      double precision,
            num_from_record boolean, -- score, latency_ms: from the record
            policy_version  text,
            node            text,
            source          text,
            shadow_reason   text,
            refusal         boolean, -- guard_is_refusal(r)
            prev_hash       text,
            hash            text,
            review_of       text,
            verdict         text,
            analyst         text,
            note            text,
            segment         text,
            line            bigint,
            record          jsonb
        ) ON COMMIT DELETE ROWS;
    END IF;
END
$$;

-- guard_ingest_rows(): the rows of guard_rows (one batch, in the
-- caller's transaction) into decisions and reviews, as
-- guard_ingest_staged() does with guard_stage's records: partitions of
-- new months created first; a record already stored (the same id and
-- time; a review: the same hash) left as it is and counted as a
-- duplicate.  Leaves guard_rows's rows to the commit.
CREATE FUNCTION guard_ingest_rows()
RETURNS TABLE (inserted bigint, duplicates bigint)
LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    n_dec bigint;
    n_rev bigint;
BEGIN
    SELECT count(*) INTO total FROM guard_rows;

    -- guard_ts: ts_ms when it is an integer >= 0, else the epoch
    PERFORM guard_partition(m)
       FROM (SELECT DISTINCT date_trunc('month',
                        CASE WHEN s.ts_ms >= 0
                             THEN to_timestamp(s.ts_ms / 1000.0)
                             ELSE to_timestamp(0) END AT TIME ZONE 'UTC') AS m
               FROM guard_rows s
              WHERE NOT coalesce(s.review, false)) p;

    WITH ins AS (
        INSERT INTO decisions (key, ts, id, kind, ts_ms, tenant, subject,
                               client_ip, method, route, traceparent, stage,
                               outcome, status, reason, score, signals,
                               thresholds, rules, policy_version, node, source,
                               shadow_reason, latency_ms, refusal, segment,
                               line, prev_hash, hash, record)
        SELECT s.key,
               CASE WHEN s.ts_ms >= 0 THEN to_timestamp(s.ts_ms / 1000.0)
                    ELSE to_timestamp(0) END,
               s.id, s.kind,
               CASE WHEN s.ts_ms >= 0 THEN s.ts_ms END,
               s.tenant, s.subject, s.client_ip, s.method, s.route,
               s.traceparent, s.stage, s.outcome, s.status, s.reason,
               CASE WHEN s.num_from_record THEN
                    CASE WHEN jsonb_typeof(s.record -> 'score') = 'number'
                         THEN (s.record ->> 'score')::double precision END
                    ELSE s.score END,
               s.record -> 'signals', s.record -> 'thresholds',
               s.record -> 'rules',
               s.policy_version, s.node, s.source, s.shadow_reason,
               CASE WHEN s.num_from_record THEN
                    CASE WHEN jsonb_typeof(s.record -> 'latency_ms') = 'number'
                         THEN (s.record ->> 'latency_ms')::double precision END
                    ELSE s.latency_ms END,
               s.refusal, s.segment, s.line, s.prev_hash, s.hash, s.record
          FROM guard_rows s
         WHERE NOT coalesce(s.review, false)
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO n_dec FROM ins;

    WITH ins AS (
        INSERT INTO reviews (hash, review_of, verdict, analyst, note, ts_ms,
                             ts, segment, line, prev_hash, record)
        SELECT s.hash, s.review_of, s.verdict, s.analyst, s.note,
               CASE WHEN s.ts_ms >= 0 THEN s.ts_ms END,
               CASE WHEN s.ts_ms >= 0 THEN to_timestamp(s.ts_ms / 1000.0)
                    ELSE to_timestamp(0) END,
               s.segment, s.line, s.prev_hash, s.record
          FROM guard_rows s
         WHERE s.review
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO n_rev FROM ins;

    inserted := n_dec + n_rev;
    duplicates := total - inserted;
    RETURN NEXT;
END
$$;
