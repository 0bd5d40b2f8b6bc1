-- Per-device deliveries of a push (store/deliveries.py). A push goes to every active device of the customer; each
-- device's answer is kept here, committed at once (outside the send's transaction, which a transient failure rolls
-- back), so a retry of the send delivers only to the devices that do not have the message yet. Keyed by the
-- message's idempotency key: the message row itself is written only when the send settles.
CREATE TABLE message_deliveries (
    idempotency_key text NOT NULL,
    customer_id     text NOT NULL,
    device_id       text NOT NULL,
    platform        text NOT NULL,
    -- sent: the provider took it; pending: failed transiently, the next attempt tries again; gave_up: failed
    -- transiently push_device_attempts times; failed: refused for good; dead: the token is dead (device deactivated)
    status          text NOT NULL CHECK (status IN ('sent', 'pending', 'gave_up', 'failed', 'dead')),
    provider_id     text,
    error           jsonb,
    attempts        integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idempotency_key, device_id)
);
CREATE INDEX message_deliveries_customer ON message_deliveries (customer_id);

-- Signed inbound SMS from the generic HTTP provider (api/routes_sms.py) already handled, by signature: a request
-- replayed inside the timestamp tolerance is recognised and not acted on twice. Rows older than the tolerance are
-- deleted as new ones arrive.
CREATE TABLE sms_inbound_seen (
    signature text PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_inbound_seen_at ON sms_inbound_seen (seen_at);
