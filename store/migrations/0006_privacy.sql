-- Suppressions: addresses that must never be messaged again on a channel, whoever the customer is (a hard
-- bounce, a spam complaint, an operator's decision). Kept after a customer is erased: the address itself is the
-- record that it must not be written to (see README, "Consent and data rights").
CREATE TABLE suppressions (
    id          bigserial PRIMARY KEY,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    address     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'manual')),
    source      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, address)
);
CREATE INDEX customers_email_lower ON customers (lower(email)) WHERE email IS NOT NULL;

-- Erasures (right to be forgotten), by pseudonym only: HMAC of the customer id with a secret, the same value
-- that replaces the customer id in the analytics tables kept (messages, step_outcomes, conversions,
-- journey_entries). completed_at is NULL while some journey run of the customer has not closed yet.
CREATE TABLE erasures (
    pseudonym     text PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    requests      integer NOT NULL DEFAULT 1,
    counts        jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Consent history pages (newest first) per customer.
CREATE INDEX consent_events_history ON consent_events (customer_id, id DESC);
