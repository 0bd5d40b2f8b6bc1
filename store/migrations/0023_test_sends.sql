-- Every test send (POST .../test-send, the console editor, `parcours ... test-send`): who sent it (a fingerprint of
-- the API key, never the key), on which channel, to whom, and when. A test send skips consent, caps and quiet hours
-- by design, so it is bounded per key instead (`test_sends_per_hour`, store.test_sends.claim) and written down
-- for whoever wants to see what went out as a test. It names no customer: it is not part of anyone's data.
CREATE TABLE test_sends (
    id        bigserial PRIMARY KEY,
    sender    text NOT NULL,
    channel   text NOT NULL,
    recipient text NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX test_sends_sender_time ON test_sends (sender, sent_at);
