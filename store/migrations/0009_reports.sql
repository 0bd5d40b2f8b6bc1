-- Journey reports and channel KPIs (store/reports.py). The report aggregates a journey's step outcomes and
-- messages; these indexes hold every column those aggregates read, so they run as index-only scans (the heap,
-- with its rendered content and JSON details, is not read). Plain indexes: correct under any concurrent write,
-- nothing to maintain by hand.

-- Step outcomes by journey and step: reached (visit 1) and the outcome breakdown, with the report's filters.
CREATE INDEX step_outcomes_report ON step_outcomes (journey_id, step_id, outcome, visit)
    INCLUDE (step_type, journey_version, recorded_at, entry_id);
-- The reasons (skips, failures, exits, hand-overs) are in the JSON detail: only those rows are read from the heap.
CREATE INDEX step_outcomes_reasons ON step_outcomes (journey_id, step_id) WHERE detail ? 'reason';
-- Experiment arms and the variant filter: the entries that took each split variant, and the holdout.
CREATE INDEX step_outcomes_arms ON step_outcomes (journey_id, step_id, outcome, entry_id)
    INCLUDE (journey_version, recorded_at, visit)
    WHERE step_type IN ('split', 'holdout');

-- The message funnel per step and channel, and channel KPIs across journeys.
CREATE INDEX messages_report ON messages (journey_id, step_id, channel, status)
    INCLUDE (journey_version, created_at, entry_id);

-- Entries: counted per journey, and joined to conversions (time to convert) by entry.
CREATE INDEX journey_entries_report ON journey_entries (journey_id, entry_id) INCLUDE (entered_at, version);

-- Opens and clicks reported as events carrying the message's idempotency key ("journey:customer:entry:step:visit"),
-- found by the journey the key starts with.
CREATE INDEX events_engagement ON events (split_part(properties->>'message_key', ':', 1), name)
    WHERE name IN ('email_opened', 'email_clicked');
