-- Every split step's variant of a converted entry (step id -> variant), not only the last one (`variant`).
-- NULL for conversions recorded before runs kept them: the step outcomes say which variant each split gave.
ALTER TABLE conversions ADD COLUMN variants jsonb;

-- Attribution (store/attribution.py) reads the conversion events of one name over a date range.
CREATE INDEX events_name_time ON events (name, occurred_at);
