-- A broadcast batch records the messages it decided to send as 'pending' in one short transaction, delivers them
-- outside any transaction, then records the outcomes. A pending message counts against frequency caps like a sent
-- one, so the caps' partial index covers both.
CREATE INDEX messages_caps_pending ON messages (customer_id, decided_at DESC)
    WHERE status IN ('sent', 'pending') AND kind = 'marketing';
DROP INDEX messages_caps;
