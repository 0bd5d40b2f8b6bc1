-- The console's customer timeline (store/timeline.py) reads a customer's events, messages and step outcomes newest
-- first, one page at a time. Messages had their index (messages_customer); step outcomes had none by customer (a
-- million rows were scanned for one page) and events only one by (customer, name), which sorts every event of the
-- customer for each page.
CREATE INDEX IF NOT EXISTS step_outcomes_customer ON step_outcomes (customer_id, recorded_at DESC)
    WHERE superseded_at IS NULL;
CREATE INDEX IF NOT EXISTS events_customer_time ON events (customer_id, occurred_at DESC);

-- A broadcast's report counts its messages' sends, opens and clicks by channel (store/broadcasts.py report): one heap page
-- read per message (tens of thousands for a large broadcast, ~0.8 s cold) without a covering index. Only broadcast
-- messages are in it, so journeys' sends pay nothing for it.
CREATE INDEX IF NOT EXISTS messages_broadcast_engagement ON messages (journey_id)
    INCLUDE (channel, status, first_human_opened_at, first_clicked_at, clicks) WHERE journey_id LIKE 'broadcast:%';
