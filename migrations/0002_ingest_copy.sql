-- 0002: a faster way in for guardd's PostgreSQL sink.  Applied by
-- `guardctl db migrate` after 0001 (never edit it once applied: add
-- 0003_..., ...).
--
-- 0001's guard_ingest(jsonb) takes a batch as one jsonb array: the server
-- parses the whole array as one value, then walks it three times with
-- jsonb_array_elements (the months of its partitions, the decisions, the
-- reviews), copying each element out every time; with guard_int's
-- regular expression, about a quarter of the server's time per record
-- (docs/events.md, "Figures").  Here the sink COPYs the batch
-- into a temporary table of its session instead, guard_stage (record
-- jsonb, segment, line): one row per journal record, parsed once by COPY;
-- then guard_ingest_staged() moves the rows of guard_stage into decisions
-- and reviews with the same columns, conflicts and counts as before.
--
--   BEGIN;
--   COPY guard_stage (record, segment, line) FROM STDIN;   -- the batch
--   SELECT inserted, duplicates FROM guard_ingest_staged();
--   COMMIT;                                -- guard_stage is empty again
--
-- guard_ingest(jsonb) keeps its contract for any other caller: it fills
-- guard_stage from its array and calls guard_ingest_staged(), so that the
-- columns are written in one place.

-- guard_int(r, k), as 0001's (a member that is a JSON integer of at most
-- 18 digits as jsonb writes it, as bigint; NULL otherwise) without its
-- regular expression, which cost more than any other column: jsonb writes
-- a number without exponent, with its scale's digits after a point, so
-- its text is "-?[0-9]{1,18}" exactly when its scale is 0 and it is below
-- 10^18 in magnitude (t/83-db.t compares both on the edge cases)
CREATE OR REPLACE FUNCTION guard_int(r jsonb, k text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(r -> k) = 'number'
                 AND scale((r -> k)::numeric) = 0
                 AND abs((r -> k)::numeric) < 1000000000000000000
                THEN (r -> k)::numeric::bigint END
$$;

-- guard_stage_open(): this session's guard_stage, created if missing.
-- ON COMMIT DELETE ROWS: its rows last one transaction (a batch)
CREATE FUNCTION guard_stage_open() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.guard_stage') IS NULL THEN
        CREATE TEMPORARY TABLE guard_stage (
            record  jsonb  NOT NULL, -- the journal record, with its hashes
            segment text   NOT NULL, -- journal-NNNNNN.jsonl
            line    bigint NOT NULL  -- its line, from 1
        ) ON COMMIT DELETE ROWS;
    END IF;
END
$$;

-- guard_ingest_staged(): the rows of guard_stage (one batch, in the
-- caller's transaction) into decisions and reviews, as guard_ingest of
-- 0001 did: partitions of new months created first; a record already
-- stored (the same id and time; a review: the same hash) left as it is
-- and counted as a duplicate.  Leaves guard_stage's rows to the commit.
CREATE FUNCTION guard_ingest_staged()
RETURNS TABLE (inserted bigint, duplicates bigint)
LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    n_dec bigint;
    n_rev bigint;
BEGIN
    SELECT count(*) INTO total FROM guard_stage;

    PERFORM guard_partition(m)
       FROM (SELECT DISTINCT date_trunc('month', guard_ts(s.record)
                                                 AT TIME ZONE 'UTC') AS m
               FROM guard_stage s
              WHERE coalesce(guard_str(s.record, 'kind'), '') <> 'review') p;

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
               s.segment, s.line,
               guard_str(r, 'prev_hash'), guard_str(r, 'hash'), r
          FROM guard_stage s, LATERAL (SELECT s.record) x(r)
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
               guard_ts(r), s.segment, s.line,
               guard_str(r, 'prev_hash'), r
          FROM guard_stage s, LATERAL (SELECT s.record) x(r)
         WHERE guard_str(r, 'kind') = 'review'
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO n_rev FROM ins;

    inserted := n_dec + n_rev;
    duplicates := total - inserted;
    RETURN NEXT;
END
$$;

-- guard_ingest(batch): 0001's contract (a JSON array of {"record": ...,
-- "segment": ..., "line": N}; inserted, duplicates), now through
-- guard_stage; guard_stage is emptied before and after, so that it may be
-- called more than once in a transaction
CREATE OR REPLACE FUNCTION guard_ingest(batch jsonb)
RETURNS TABLE (inserted bigint, duplicates bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM guard_stage_open();
    TRUNCATE guard_stage;
    INSERT INTO guard_stage (record, segment, line)
    SELECT e -> 'record', e ->> 'segment', (e ->> 'line')::bigint
      FROM jsonb_array_elements(batch) e;
    RETURN QUERY SELECT * FROM guard_ingest_staged();
    TRUNCATE guard_stage;
END
$$;
