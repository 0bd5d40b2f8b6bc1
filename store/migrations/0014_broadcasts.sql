-- Named segments, broadcasts and their frozen audiences (README, "Segments and broadcasts").

-- A named segment: the conditions of a journey's segment entry (profile conditions, event history), reusable by
-- broadcasts and by journeys (entry.segment.ref). Changing one never changes a broadcast already frozen.
CREATE TABLE segments (
    id          text PRIMARY KEY,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A one-off send to a segment. The definition is kept as given; the segment it resolved to is copied when the
-- audience is frozen, so later edits of the named segment change nothing here.
CREATE TABLE broadcasts (
    id           text PRIMARY KEY,
    definition   jsonb NOT NULL,
    segment      jsonb,
    status       text NOT NULL DEFAULT 'scheduled'
                 CHECK (status IN ('scheduled', 'sending', 'paused', 'cancelled', 'completed')),
    audience     integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    frozen_at    timestamptz,
    finished_at  timestamptz
);

-- The frozen audience: one row per member, inserted in one statement when the broadcast starts. due_at is when
-- this customer's message may go (a local send time differs per time zone; quiet hours move it later).
-- status: pending until the send decided; then sent, skipped or failed (as its message row), holdout (counted,
-- never sent) or cancelled.
CREATE TABLE broadcast_recipients (
    broadcast_id  text NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    customer_id   text NOT NULL,
    due_at        timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'skipped', 'failed', 'holdout', 'cancelled')),
    reason        text,
    channel       text,
    decided_at    timestamptz,
    PRIMARY KEY (broadcast_id, customer_id)
);
CREATE INDEX broadcast_recipients_due ON broadcast_recipients (broadcast_id, due_at, customer_id)
    WHERE status = 'pending';
