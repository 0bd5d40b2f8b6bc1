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
