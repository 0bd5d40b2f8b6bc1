-- Subscription topics defined through the API (PUT /v1/topics/{name}); they win over PARCOURS_TOPICS.
-- default_status: opt_in topics count as not subscribed until the customer says yes.
CREATE TABLE topics (
    name            text PRIMARY KEY,
    label           text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    default_status  text NOT NULL CHECK (default_status IN ('opt_in', 'opt_out')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
