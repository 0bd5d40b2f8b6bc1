-- A reset re-runs a send whose message failed in the earlier run (the provider was down, the template was broken).
-- The new run tries again: the failed row is replaced by the new attempt's, which carries the attempts before it
-- in earlier_attempts (run, status, reason code, channel, when; no recipient or content). Only a failed row of
-- another run is replaced: a message once sent stays sent, and a retried activity of the same run finds its row.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS run_id text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS earlier_attempts jsonb NOT NULL DEFAULT '[]'::jsonb;
