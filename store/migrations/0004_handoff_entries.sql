-- A journey may hand a customer to another (start_journey step): such entries are recorded as 'handoff'.
ALTER TABLE journey_entries DROP CONSTRAINT journey_entries_source_check;
ALTER TABLE journey_entries ADD CONSTRAINT journey_entries_source_check
    CHECK (source IN ('trigger', 'segment', 'handoff'));
