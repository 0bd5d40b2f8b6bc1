-- Operations (parcours ops).

-- Find a run's failed steps by its workflow id (parcours ops failures).
CREATE INDEX IF NOT EXISTS step_outcomes_workflow ON step_outcomes (workflow_id) WHERE outcome = 'failed';

-- Every operator action on runs (exit, reset): who, why, what it touched. Never updated.
CREATE TABLE IF NOT EXISTS ops_actions (
    id          bigserial PRIMARY KEY,
    action      text NOT NULL,
    actor       text NOT NULL,
    reason      text NOT NULL,
    target      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ops_actions_created ON ops_actions (created_at DESC);
