-- Push devices (store/devices.py): each app install a customer registered, by the id the app gives it. A push goes
-- to every active device; a provider's "this token is dead" answer deactivates the device at once.
CREATE TABLE devices (
    customer_id     text NOT NULL,
    device_id       text NOT NULL,
    platform        text NOT NULL CHECK (platform IN ('fcm', 'apns', 'web')),
    token           text,
    subscription    jsonb,
    app             text,
    locale          text,
    active          boolean NOT NULL DEFAULT true,
    deactivated_at  timestamptz,
    deactivated_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, device_id),
    CHECK ((platform = 'web') = (subscription IS NOT NULL)),
    CHECK (platform = 'web' OR token IS NOT NULL)
);
CREATE INDEX devices_token ON devices (platform, token) WHERE token IS NOT NULL;

-- Delivery receipts (a provider's status callback) and what an SMS cost to send: GSM-7 or UCS-2, how many
-- segments, and the cost (the channel's per-segment cost times the segments).
ALTER TABLE messages
    ADD COLUMN delivered_at      timestamptz,
    ADD COLUMN failed_at         timestamptz,
    ADD COLUMN provider_status   text,
    ADD COLUMN provider_error    text,
    ADD COLUMN segments          integer,
    ADD COLUMN encoding          text,
    ADD COLUMN cost              numeric;
