-- Engagement per message (store/engagement.py): opens (all, and those judged human), clicks, and the bounce,
-- complaint and unsubscribe the message caused. Columns on messages rather than a table of their own: the send
-- path writes nothing more (defaults), erasure and merges treat them with the rest of the row, and reports read
-- one table.
ALTER TABLE messages
    ADD COLUMN opens                  integer NOT NULL DEFAULT 0,
    ADD COLUMN human_opens            integer NOT NULL DEFAULT 0,
    ADD COLUMN first_opened_at        timestamptz,
    ADD COLUMN first_human_opened_at  timestamptz,
    ADD COLUMN clicks                 integer NOT NULL DEFAULT 0,
    ADD COLUMN first_clicked_at       timestamptz,
    ADD COLUMN bounced_at             timestamptz,
    ADD COLUMN complained_at          timestamptz,
    ADD COLUMN unsubscribed_at        timestamptz;

-- A provider's bounce or complaint names the message by the Message-ID we gave it (provider_message_id).
CREATE INDEX messages_provider_message_id ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;
