-- A reset run re-executes steps the run before it already recorded. Step outcomes keep every attempt: the row of
-- the earlier run is marked superseded (superseded_at) when a later run of the same entry records the same step
-- visit, and only current rows (superseded_at IS NULL) are unique, counted by the report triggers, read by the
-- reports, `parcours ops failures`, merges and erasure. A retried or replayed activity of the same run still
-- changes nothing (store/outcomes.py).
ALTER TABLE step_outcomes ADD COLUMN IF NOT EXISTS superseded_at timestamptz;

DO $$
DECLARE
    name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
     WHERE conrelid = 'step_outcomes'::regclass AND contype = 'u';
    IF name IS NOT NULL THEN
        EXECUTE format('ALTER TABLE step_outcomes DROP CONSTRAINT %I', name);
    END IF;
END $$;

CREATE UNIQUE INDEX IF NOT EXISTS step_outcomes_current
    ON step_outcomes (journey_id, customer_id, entry_id, step_id, visit) WHERE superseded_at IS NULL;

-- The report's counts: a row counts while it is current; superseding it takes it out.
CREATE OR REPLACE FUNCTION report_count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') AND OLD.superseded_at IS NULL THEN
        INSERT INTO report_outcome_counts (journey_id, journey_version, day, step_id, step_type, outcome, reason,
                                           visits, entries)
        VALUES (OLD.journey_id, OLD.journey_version, (OLD.recorded_at AT TIME ZONE 'UTC')::date, OLD.step_id,
                OLD.step_type, OLD.outcome, report_reason(OLD.step_type, OLD.detail), -1,
                -(OLD.visit = 1)::int);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.superseded_at IS NULL THEN
        INSERT INTO report_outcome_counts (journey_id, journey_version, day, step_id, step_type, outcome, reason,
                                           visits, entries)
        VALUES (NEW.journey_id, NEW.journey_version, (NEW.recorded_at AT TIME ZONE 'UTC')::date, NEW.step_id,
                NEW.step_type, NEW.outcome, report_reason(NEW.step_type, NEW.detail), 1, (NEW.visit = 1)::int);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS step_outcomes_recounted ON step_outcomes;
CREATE TRIGGER step_outcomes_recounted AFTER UPDATE ON step_outcomes FOR EACH ROW
    WHEN ((OLD.journey_id, OLD.journey_version, OLD.recorded_at, OLD.step_id, OLD.step_type, OLD.outcome,
           report_reason(OLD.step_type, OLD.detail), OLD.visit = 1, OLD.superseded_at IS NULL)
          IS DISTINCT FROM (NEW.journey_id, NEW.journey_version, NEW.recorded_at, NEW.step_id, NEW.step_type,
           NEW.outcome, report_reason(NEW.step_type, NEW.detail), NEW.visit = 1, NEW.superseded_at IS NULL))
    EXECUTE FUNCTION report_count_outcome();
