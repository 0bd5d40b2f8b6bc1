-- How a send was decided: the journey's clock when it was decided (frequency caps count on it) and which
-- channel was chosen, why, and what was tried.
ALTER TABLE messages ADD COLUMN decided_at timestamptz;
ALTER TABLE messages ADD COLUMN choice jsonb;
UPDATE messages SET decided_at = created_at WHERE decided_at IS NULL;
CREATE INDEX messages_caps ON messages (customer_id, decided_at DESC) WHERE status = 'sent' AND kind = 'marketing';
