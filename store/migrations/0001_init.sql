-- Parcours schema, version 1.

CREATE TABLE customers (
    id          text PRIMARY KEY,
    email       text,
    phone       text,
    timezone    text,
    locale      text,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Consent is a ledger: every change is appended, never overwritten. The current state is the newest row
-- per (customer, scope, name); see the consent_current view.
CREATE TABLE consent_events (
    id            bigserial PRIMARY KEY,
    customer_id   text NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    scope         text NOT NULL CHECK (scope IN ('channel', 'topic')),
    name          text NOT NULL,
    status        text NOT NULL CHECK (status IN ('granted', 'withdrawn')),
    source        text NOT NULL DEFAULT 'api',
    lawful_basis  text,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX consent_events_customer ON consent_events (customer_id, scope, name, id DESC);

CREATE VIEW consent_current AS
SELECT DISTINCT ON (customer_id, scope, name)
       customer_id, scope, name, status, source, lawful_basis, recorded_at
  FROM consent_events
 ORDER BY customer_id, scope, name, id DESC;

-- Behaviour events, stored once by their id. routed_at is NULL until the router has delivered the event to
-- Temporal: the rows with routed_at IS NULL are the outbox.
CREATE TABLE events (
    event_id     text PRIMARY KEY,
    customer_id  text NOT NULL,
    name         text NOT NULL,
    properties   jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    routed_at    timestamptz,
    route_attempts integer NOT NULL DEFAULT 0,
    route_error  text
);
CREATE INDEX events_customer_name ON events (customer_id, name, occurred_at DESC);
CREATE INDEX events_unrouted ON events (received_at) WHERE routed_at IS NULL;

CREATE TABLE journeys (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'archived')),
    latest_version  integer NOT NULL,
    trigger_event   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE journey_versions (
    journey_id    text NOT NULL REFERENCES journeys(id),
    version       integer NOT NULL,
    definition    jsonb NOT NULL,
    checksum      text NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journey_id, version)
);

-- A published version is immutable.
CREATE FUNCTION journey_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journey version %/% is published and immutable', OLD.journey_id, OLD.version;
END $$;
CREATE TRIGGER journey_versions_no_update BEFORE UPDATE OR DELETE ON journey_versions
    FOR EACH ROW EXECUTE FUNCTION journey_versions_immutable();

-- One row per message a journey step asked for, keyed by the business idempotency key built in the workflow.
CREATE TABLE messages (
    id                   bigserial PRIMARY KEY,
    idempotency_key      text NOT NULL UNIQUE,
    journey_id           text NOT NULL,
    journey_version      integer NOT NULL,
    step_id              text NOT NULL,
    customer_id          text NOT NULL,
    entry_id             text NOT NULL,
    channel              text NOT NULL,
    topic                text,
    kind                 text NOT NULL CHECK (kind IN ('marketing', 'transactional')),
    status               text NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    reason               text,
    recipient            text,
    rendered             jsonb,
    provider_message_id  text,
    provider_response    jsonb,
    error                text,
    attempts             integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz
);
CREATE INDEX messages_customer ON messages (customer_id, created_at DESC);
CREATE INDEX messages_journey ON messages (journey_id, journey_version, step_id);

-- In-app inbox.
CREATE TABLE inbox_messages (
    id               bigserial PRIMARY KEY,
    customer_id      text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    title            text,
    body             text NOT NULL,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    read_at          timestamptz
);
CREATE INDEX inbox_customer ON inbox_messages (customer_id, created_at DESC);

-- What happened at each step of each entry, for analytics. A step visited again in a loop has visit > 1.
CREATE TABLE step_outcomes (
    id               bigserial PRIMARY KEY,
    journey_id       text NOT NULL,
    journey_version  integer NOT NULL,
    customer_id      text NOT NULL,
    entry_id         text NOT NULL,
    step_id          text NOT NULL,
    visit            integer NOT NULL DEFAULT 1,
    step_type        text NOT NULL,
    outcome          text NOT NULL,
    detail           jsonb NOT NULL DEFAULT '{}'::jsonb,
    workflow_id      text NOT NULL,
    run_id           text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (journey_id, customer_id, entry_id, step_id, visit)
);
CREATE INDEX step_outcomes_journey ON step_outcomes (journey_id, journey_version, step_id, outcome);

-- Goal conversions, one per entry.
CREATE TABLE conversions (
    id               bigserial PRIMARY KEY,
    journey_id       text NOT NULL,
    journey_version  integer NOT NULL,
    customer_id      text NOT NULL,
    entry_id         text NOT NULL,
    event_id         text NOT NULL,
    event_name       text NOT NULL,
    value            numeric,
    variant          text,
    last_message_key text,
    converted_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (journey_id, customer_id, entry_id)
);
