-- The last exact count of each named segment (README, "Segments and broadcasts"): what the console shows at once
-- ("about N, counted 3 minutes ago") and what GET /v1/segments/{id}/count?max_age=... may answer without a scan.
-- One row per segment, replaced by every exact count. `checksum` is the SHA-256 of the definition it was counted
-- for (store.segments.definition_checksum): a count of an earlier definition is never read as the current one.
-- `exact_as_of` is the instant the count describes (its snapshot and event windows), `counted_at` when it ended.
CREATE TABLE segment_counts (
    segment_id   text PRIMARY KEY REFERENCES segments (id) ON DELETE CASCADE,
    checksum     text NOT NULL,
    members      bigint NOT NULL,
    sample       text[] NOT NULL DEFAULT '{}',
    exact_as_of  timestamptz NOT NULL,
    counted_at   timestamptz NOT NULL,
    milliseconds double precision NOT NULL
);

-- An event-history condition ("opened an email in the last 30 days") counts customers with a matching event: the
-- plan hashes the customer ids of every event of that name since then. With customer_id in the index of
-- (name, occurred_at), those come from an index-only scan instead of the events heap (their properties make it
-- four times the index: 1,015 -> 800 ms and 20,000 -> 4,500 pages for 185,000 events, bench.console). It
-- replaces events_name_time (same keys), so an event insert still updates as many indexes as before.
CREATE INDEX events_name_time_customer ON events (name, occurred_at) INCLUDE (customer_id);
DROP INDEX IF EXISTS events_name_time;
