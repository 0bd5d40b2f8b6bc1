-- Journey entries, for re-entry policies (once, cooldown) and analytics. One row per entry a router or a
-- segment schedule claimed; entry_id is the trigger event id (segment entries: "segment:{journey}:{run}:{customer}").
CREATE TABLE journey_entries (
    journey_id   text NOT NULL,
    customer_id  text NOT NULL,
    entry_id     text NOT NULL,
    version      integer NOT NULL,
    source       text NOT NULL DEFAULT 'trigger' CHECK (source IN ('trigger', 'segment')),
    entered_at   timestamptz NOT NULL,
    PRIMARY KEY (journey_id, customer_id, entry_id)
);
CREATE INDEX journey_entries_latest ON journey_entries (journey_id, customer_id, entered_at DESC);
