-- Identity resolution: anonymous visitors and other aliases linked to a customer, merges and their log.

-- A profile merged into another keeps its row (its consent ledger stays attached to it, never rewritten) with
-- merged_into set and its personal fields emptied; everything else moved to the surviving customer.
ALTER TABLE customers ADD COLUMN merged_into text;
ALTER TABLE customers ADD COLUMN merged_at timestamptz;
-- Per field ("email", "timezone", "attributes.plan", ...): when it was last written and whether the customer
-- stated it themselves ({"at": ..., "explicit": true}); the merge rules read it.
ALTER TABLE customers ADD COLUMN field_meta jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;

-- The device or cookie id an event was sent under, kept after it resolved to a customer.
ALTER TABLE events ADD COLUMN anonymous_id text;

-- Every alias that resolves to a customer: anonymous ids, email addresses and phone numbers linked by identify,
-- and the ids of profiles merged into it. An alias belongs to one customer at a time.
CREATE TABLE identities (
    kind         text NOT NULL CHECK (kind IN ('anonymous_id', 'customer_id', 'email', 'phone')),
    value        text NOT NULL,
    customer_id  text NOT NULL,
    source       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);
CREATE INDEX identities_customer ON identities (customer_id);

-- The merge log: one row per alias an identify call linked, with the profile merged in (if there was one),
-- who asked, from where, which fields were taken or kept, and what became of the merged profile's journey runs.
-- notified_at is NULL until those runs were told (the router's drainer retries).
CREATE TABLE identity_merges (
    id           bigserial PRIMARY KEY,
    customer_id  text NOT NULL,
    merged_id    text,
    alias_kind   text NOT NULL,
    alias_value  text NOT NULL,
    source       text NOT NULL,
    actor        text NOT NULL,
    fields       jsonb NOT NULL DEFAULT '{}'::jsonb,
    moved        jsonb NOT NULL DEFAULT '{}'::jsonb,
    runs         jsonb NOT NULL DEFAULT '[]'::jsonb,
    merged_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    notified_at  timestamptz
);
CREATE INDEX identity_merges_customer ON identity_merges (customer_id, id DESC);
CREATE INDEX identity_merges_pending ON identity_merges (id) WHERE notified_at IS NULL;

-- A journey run started for a profile that was merged into this customer and carries on for them: events of the
-- customer for that journey go to this workflow id instead of "{journey}:{customer}".
CREATE TABLE adopted_runs (
    customer_id  text NOT NULL,
    journey_id   text NOT NULL,
    workflow_id  text NOT NULL,
    merge_id     bigint,
    adopted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, journey_id)
);
