-- Isolation of poisoned events (orchestration/router.py).
--
-- next_attempt_at: when the drainer may try an event again after a failed attempt (backoff per event), so a
-- failing event never holds the outbox's head: the drainer takes due events in order of their next attempt.
-- dead_letters: an event a run refused for a reason that concerns that run only (it received too many signals,
-- the payload is too large, the run is gone): taken out of the outbox with the reason, listed by
-- GET /v1/events/dead-letters and put back by POST /v1/events/dead-letters/{event_id}/retry. Rows go with their
-- event (an erasure deletes both).
ALTER TABLE events ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;

CREATE INDEX IF NOT EXISTS events_outbox_due
    ON events ((COALESCE(next_attempt_at, received_at)), event_id) WHERE routed_at IS NULL;
CREATE INDEX IF NOT EXISTS events_outbox_customer
    ON events (customer_id, received_at) WHERE routed_at IS NULL;

CREATE TABLE IF NOT EXISTS dead_letters (
    event_id      text PRIMARY KEY REFERENCES events(event_id) ON DELETE CASCADE,
    workflow_id   text,
    reason        text NOT NULL CHECK (reason IN ('signal_limit', 'payload_too_large', 'not_found', 'rejected',
                                                  'failing')),
    detail        text NOT NULL DEFAULT '',
    attempts      integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_created ON dead_letters (created_at DESC, event_id);
