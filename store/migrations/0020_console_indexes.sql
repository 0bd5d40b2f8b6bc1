-- The console's customer timeline (store/timeline.py) reads a customer's events, messages and step outcomes newest
-- first, one page at a time. Messages had their index (messages_customer); step outcomes had none by customer (a
-- million rows were scanned for one page) and events only one by (customer, name), which sorts every event of the
-- customer for each page.
CREATE INDEX IF NOT EXISTS step_outcomes_customer ON step_outcomes (customer_id, recorded_at DESC)
    WHERE superseded_at IS NULL;
CREATE INDEX IF NOT EXISTS events_customer_time ON events (customer_id, occurred_at DESC);
