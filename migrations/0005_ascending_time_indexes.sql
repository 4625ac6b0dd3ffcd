-- 0005: the time indexes of decisions in ascending order.
--
-- 0001 indexed decisions by (tenant, ts DESC), (subject, ts DESC),
-- (reason, ts DESC) and (ts DESC) WHERE refusal, for the SOC queries'
-- newest-first order.  A btree reads as well backwards as forwards, so an
-- ascending index serves `ORDER BY ts DESC` with the same plan, a
-- backward index scan.  But guardd appends in time order, so a new row
-- is the newest of its tenant, subject and reason: in a descending index
-- it lands before every other entry of its key, and page splits there
-- leave half-empty pages behind; in an ascending index it lands after
-- them, where PostgreSQL packs the page it splits (and in
-- decisions_refusal_ts, always on the index's rightmost page).  Measured
-- with bench/store.sh (1,000,000 records in journal order, a quiet
-- machine): the server's CPU per record 33.4 us before, 30.5 us after in
-- two runs (24,987 against 26,206 and 26,104 records/s; docs/events.md,
-- Figures).  The indexes are smaller too: 1,000,000 rows of 20
-- tenants inserted in time order, (tenant, ts DESC) took 6,884 pages and
-- (tenant, ts) 3,868; (ts DESC) WHERE refusal 4,928 and (ts) 2,745.  The
-- same names, the same columns: no query changes.
DROP INDEX decisions_tenant_ts;
DROP INDEX decisions_subject_ts;
DROP INDEX decisions_reason_ts;
DROP INDEX decisions_refusal_ts;
CREATE INDEX decisions_tenant_ts ON decisions (tenant, ts);
CREATE INDEX decisions_subject_ts ON decisions (subject, ts);
CREATE INDEX decisions_reason_ts ON decisions (reason, ts);
CREATE INDEX decisions_refusal_ts ON decisions (ts) WHERE refusal;
