-- The experiments read-out (store/reports.py experiment_arms, treated_arm) from count tables, as the report's
-- other figures are since 0009: per journey, version, UTC day, split step and arm, the entries that took the arm,
-- those that converted and their revenue; and the same for everyone treated (not held out).
--
-- An entry's arms and its conversion are written at different times (a conversion can come before or after the
-- split, a holdout's outcome is recorded when its window closes), so a count cannot be kept from one row alone.
-- report_experiment_entries keeps what each entry contributes to report_experiment_counts; whenever a row of an
-- entry changes (an arm recorded, a conversion, a reset superseding an outcome, an erasure renaming the entry),
-- report_experiment_refresh takes the entry's old contribution out and puts its new one in, as +/- delta rows like
-- 0009's (compacted by store/report_counts.py before a read). A row lock per entry (report_experiment_locks)
-- serialises two writers of one entry, so the second one's refresh sees the first one's rows (a row lock, not an
-- advisory one: a bulk load writing every entry in one transaction would run out of the shared lock table).
--
-- Rows with step_id '$treated' are the treated arm: an entry counts on the day of its first step outcome (any
-- outcome but the holdout's and '$exit', superseded ones included), once per version (journey_version) and once
-- over all versions (journey_version NULL), unless it has a '$holdout' outcome; with every conversion of the entry.
-- Arm rows: a current first visit of a split (variant: its outcome) or holdout step (variant 'holdout' for
-- '$holdout'), on the day it was recorded, with the entry's conversions that do not name another variant for
-- that step (conversions.variants).

CREATE TABLE report_experiment_counts (
    journey_id       text NOT NULL,
    journey_version  integer,
    day              date NOT NULL,
    step_id          text NOT NULL,
    variant          text NOT NULL,
    entries          bigint NOT NULL,
    converted        bigint NOT NULL,
    revenue          numeric NOT NULL,
    delta            boolean NOT NULL DEFAULT true
);
CREATE INDEX report_experiment_counts_journey ON report_experiment_counts (journey_id, delta);
CREATE UNIQUE INDEX report_experiment_counts_key ON report_experiment_counts
    (journey_id, journey_version, day, step_id, variant) NULLS NOT DISTINCT WHERE NOT delta;

CREATE TABLE report_experiment_entries (
    journey_id       text NOT NULL,
    entry_id         text NOT NULL,
    journey_version  integer,
    day              date NOT NULL,
    step_id          text NOT NULL,
    variant          text NOT NULL,
    entries          bigint NOT NULL,
    converted        bigint NOT NULL,
    revenue          numeric NOT NULL,
    first_at         timestamptz
);
CREATE INDEX report_experiment_entries_entry ON report_experiment_entries (journey_id, entry_id);
CREATE TABLE report_experiment_locks (
    journey_id  text NOT NULL,
    entry_id    text NOT NULL,
    PRIMARY KEY (journey_id, entry_id)
);

-- An entry's rows, and its conversions, found by entry.
CREATE INDEX IF NOT EXISTS step_outcomes_entry ON step_outcomes (journey_id, entry_id);
CREATE INDEX IF NOT EXISTS conversions_entry ON conversions (journey_id, entry_id);

-- The report's bounces (store/reports.py _lost_sql) find the customer of each hard-bounced address through
-- customers_email_lower (0006). Without statistics on lower(email) the planner took every customer for a match and
-- read the whole table instead (400,000 customers: ~250 ms of each report); with them, one index look-up a bounce.
CREATE STATISTICS IF NOT EXISTS customers_email_lower_stats ON (lower(email)) FROM customers;
ANALYZE customers;

-- What one entry contributes now (the statement the backfill below runs for every entry at once).
CREATE FUNCTION report_experiment_rows(j text, e text)
RETURNS TABLE (journey_version integer, day date, step_id text, variant text, entries bigint, converted bigint,
               revenue numeric, first_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT a.journey_version, (a.recorded_at AT TIME ZONE 'UTC')::date, a.step_id, a.variant, 1::bigint,
           count(c.id), coalesce(sum(c.value), 0), NULL::timestamptz
      FROM (SELECT o.id, o.journey_version, o.recorded_at, o.step_id,
                   CASE WHEN o.step_id = '$holdout' THEN 'holdout' ELSE o.outcome END AS variant
              FROM step_outcomes o
             WHERE o.journey_id = j AND o.entry_id = e AND o.step_type IN ('split', 'holdout') AND o.visit = 1
               AND o.superseded_at IS NULL) a
      LEFT JOIN conversions c ON c.journey_id = j AND c.entry_id = e
           AND (a.step_id = '$holdout' OR coalesce(c.variants ->> a.step_id, a.variant) = a.variant)
     GROUP BY a.id, a.journey_version, a.recorded_at, a.step_id, a.variant
    UNION ALL
    SELECT f.journey_version, (f.first_at AT TIME ZONE 'UTC')::date, '$treated', 'treated', 1, c.n, c.revenue,
           f.first_at
      FROM (SELECT o.journey_version, min(o.recorded_at) AS first_at FROM step_outcomes o
             WHERE o.journey_id = j AND o.entry_id = e AND o.step_type <> 'holdout' AND o.step_id <> '$exit'
             GROUP BY GROUPING SETS ((o.journey_version), ()) HAVING count(*) > 0) f
     CROSS JOIN (SELECT count(*) AS n, coalesce(sum(value), 0) AS revenue FROM conversions
                  WHERE journey_id = j AND entry_id = e) c
     WHERE NOT EXISTS (SELECT 1 FROM step_outcomes h WHERE h.journey_id = j AND h.entry_id = e
                          AND h.step_id = '$holdout')
$$;

-- Each write of an entry's rows looks the entry up (a few index scans). A bulk load of many thousands of entries in
-- one statement into tables whose statistics still say "empty" (a fresh database) gets plans that slow down as the
-- load grows: load in chunks with ANALYZE between them (bench/reports.py does).
CREATE FUNCTION report_experiment_refresh(j text, e text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOOP  -- again if the row went away while this waited for it (its entry was renamed by an erasure)
        INSERT INTO report_experiment_locks (journey_id, entry_id) VALUES (j, e) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM report_experiment_locks WHERE journey_id = j AND entry_id = e FOR UPDATE;
        EXIT WHEN FOUND;
    END LOOP;
    WITH gone AS (DELETE FROM report_experiment_entries WHERE journey_id = j AND entry_id = e RETURNING *)
    INSERT INTO report_experiment_counts (journey_id, journey_version, day, step_id, variant, entries, converted,
                                          revenue)
    SELECT j, g.journey_version, g.day, g.step_id, g.variant, -g.entries, -g.converted, -g.revenue FROM gone g;
    WITH now AS (
        INSERT INTO report_experiment_entries (journey_id, entry_id, journey_version, day, step_id, variant,
                                               entries, converted, revenue, first_at)
        SELECT j, e, r.* FROM report_experiment_rows(j, e) r RETURNING *
    )
    INSERT INTO report_experiment_counts (journey_id, journey_version, day, step_id, variant, entries, converted,
                                          revenue)
    SELECT j, n.journey_version, n.day, n.step_id, n.variant, n.entries, n.converted, n.revenue FROM now n;
    -- An entry id no row has any more (an erasure renamed it: it holds the customer's id) leaves nothing behind.
    IF NOT EXISTS (SELECT 1 FROM step_outcomes WHERE journey_id = j AND entry_id = e)
       AND NOT EXISTS (SELECT 1 FROM conversions WHERE journey_id = j AND entry_id = e) THEN
        DELETE FROM report_experiment_locks WHERE journey_id = j AND entry_id = e;
    END IF;
END $$;

-- Step outcomes. Most outcomes change nothing here: a later step of an entry already counted as treated (under
-- its version and overall) that is neither an arm nor the holdout's.
CREATE FUNCTION report_experiment_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.step_type NOT IN ('split', 'holdout') AND NEW.step_id <> '$holdout'
       AND (NEW.step_id = '$exit' OR (
            SELECT count(*) FROM report_experiment_entries x
             WHERE x.journey_id = NEW.journey_id AND x.entry_id = NEW.entry_id AND x.step_id = '$treated'
               AND (x.journey_version IS NULL OR x.journey_version = NEW.journey_version)
               AND x.first_at <= NEW.recorded_at) = 2) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM report_experiment_refresh(OLD.journey_id, OLD.entry_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR (NEW.journey_id, NEW.entry_id)
                                          IS DISTINCT FROM (OLD.journey_id, OLD.entry_id)) THEN
        PERFORM report_experiment_refresh(NEW.journey_id, NEW.entry_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER step_outcomes_experiment_counted AFTER INSERT OR DELETE ON step_outcomes
    FOR EACH ROW EXECUTE FUNCTION report_experiment_outcome();
CREATE TRIGGER step_outcomes_experiment_recounted AFTER UPDATE ON step_outcomes FOR EACH ROW
    WHEN ((OLD.journey_id, OLD.entry_id, OLD.journey_version, OLD.recorded_at, OLD.step_id, OLD.step_type,
           OLD.outcome, OLD.visit, OLD.superseded_at IS NULL)
          IS DISTINCT FROM (NEW.journey_id, NEW.entry_id, NEW.journey_version, NEW.recorded_at, NEW.step_id,
           NEW.step_type, NEW.outcome, NEW.visit, NEW.superseded_at IS NULL))
    EXECUTE FUNCTION report_experiment_outcome();

CREATE FUNCTION report_experiment_conversion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM report_experiment_refresh(OLD.journey_id, OLD.entry_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR (NEW.journey_id, NEW.entry_id)
                                          IS DISTINCT FROM (OLD.journey_id, OLD.entry_id)) THEN
        PERFORM report_experiment_refresh(NEW.journey_id, NEW.entry_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER conversions_experiment_counted AFTER INSERT OR DELETE ON conversions
    FOR EACH ROW EXECUTE FUNCTION report_experiment_conversion();
CREATE TRIGGER conversions_experiment_recounted AFTER UPDATE ON conversions FOR EACH ROW
    WHEN ((OLD.journey_id, OLD.entry_id, OLD.value, OLD.variants)
          IS DISTINCT FROM (NEW.journey_id, NEW.entry_id, NEW.value, NEW.variants))
    EXECUTE FUNCTION report_experiment_conversion();

-- What was recorded before this migration, every entry at once (the triggers above hold the tables' write locks
-- until the migration commits, so no write falls between the two).
INSERT INTO report_experiment_entries (journey_id, entry_id, journey_version, day, step_id, variant, entries,
                                       converted, revenue, first_at)
SELECT a.journey_id, a.entry_id, a.journey_version, (a.recorded_at AT TIME ZONE 'UTC')::date, a.step_id, a.variant,
       1, count(c.id), coalesce(sum(c.value), 0), NULL
  FROM (SELECT o.id, o.journey_id, o.entry_id, o.journey_version, o.recorded_at, o.step_id,
               CASE WHEN o.step_id = '$holdout' THEN 'holdout' ELSE o.outcome END AS variant
          FROM step_outcomes o
         WHERE o.step_type IN ('split', 'holdout') AND o.visit = 1 AND o.superseded_at IS NULL) a
  LEFT JOIN conversions c ON c.journey_id = a.journey_id AND c.entry_id = a.entry_id
       AND (a.step_id = '$holdout' OR coalesce(c.variants ->> a.step_id, a.variant) = a.variant)
 GROUP BY a.id, a.journey_id, a.entry_id, a.journey_version, a.recorded_at, a.step_id, a.variant;

INSERT INTO report_experiment_entries (journey_id, entry_id, journey_version, day, step_id, variant, entries,
                                       converted, revenue, first_at)
SELECT f.journey_id, f.entry_id, f.journey_version, (f.first_at AT TIME ZONE 'UTC')::date, '$treated', 'treated', 1,
       coalesce(c.n, 0), coalesce(c.revenue, 0), f.first_at
  FROM (SELECT o.journey_id, o.entry_id, o.journey_version, min(o.recorded_at) AS first_at FROM step_outcomes o
         WHERE o.step_type <> 'holdout' AND o.step_id <> '$exit'
         GROUP BY GROUPING SETS ((o.journey_id, o.entry_id, o.journey_version), (o.journey_id, o.entry_id))) f
  LEFT JOIN (SELECT journey_id, entry_id, count(*) AS n, coalesce(sum(value), 0) AS revenue FROM conversions
              GROUP BY 1, 2) c ON c.journey_id = f.journey_id AND c.entry_id = f.entry_id
 WHERE NOT EXISTS (SELECT 1 FROM step_outcomes h WHERE h.journey_id = f.journey_id AND h.entry_id = f.entry_id
                      AND h.step_id = '$holdout');

INSERT INTO report_experiment_counts (journey_id, journey_version, day, step_id, variant, entries, converted,
                                      revenue, delta)
SELECT journey_id, journey_version, day, step_id, variant, sum(entries), sum(converted), sum(revenue), false
  FROM report_experiment_entries GROUP BY 1, 2, 3, 4, 5;
