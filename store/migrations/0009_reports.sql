-- Journey reports and channel KPIs (store/reports.py, store/report_counts.py).
--
-- Counts per journey, version, UTC day and step/outcome (or step/channel/status, or entries, or opens and clicks)
-- are kept in count tables, so a report reads a few hundred rows however many outcomes and messages there are. Triggers
-- append a +1/-1 "delta" row in the writer's own transaction for every row inserted, deleted or re-keyed: a plain
-- INSERT into a table without a unique key, so concurrent writers never wait for each other and nothing is lost
-- or counted twice (a rolled-back write takes its delta with it). Reading sums the compacted rows and the deltas;
-- compaction (store/report_counts.py, before a report) folds the deltas into one row per key.

CREATE TABLE report_outcome_counts (
    journey_id       text NOT NULL,
    journey_version  integer NOT NULL,
    day              date NOT NULL,
    step_id          text NOT NULL,
    step_type        text NOT NULL,
    outcome          text NOT NULL,
    reason           text,
    visits           bigint NOT NULL,
    entries          bigint NOT NULL,
    delta            boolean NOT NULL DEFAULT true
);
CREATE INDEX report_outcome_counts_journey ON report_outcome_counts (journey_id, delta);
CREATE UNIQUE INDEX report_outcome_counts_key ON report_outcome_counts
    (journey_id, journey_version, day, step_id, step_type, outcome, reason) NULLS NOT DISTINCT WHERE NOT delta;

CREATE TABLE report_message_counts (
    journey_id       text NOT NULL,
    journey_version  integer NOT NULL,
    day              date NOT NULL,
    step_id          text NOT NULL,
    channel          text NOT NULL,
    status           text NOT NULL,
    messages         bigint NOT NULL,
    delta            boolean NOT NULL DEFAULT true
);
CREATE INDEX report_message_counts_journey ON report_message_counts (journey_id, delta);
CREATE UNIQUE INDEX report_message_counts_key ON report_message_counts
    (journey_id, journey_version, day, step_id, channel, status) WHERE NOT delta;

CREATE TABLE report_entry_counts (
    journey_id  text NOT NULL,
    version     integer NOT NULL,
    day         date NOT NULL,
    entries     bigint NOT NULL,
    delta       boolean NOT NULL DEFAULT true
);
CREATE INDEX report_entry_counts_journey ON report_entry_counts (journey_id, delta);
CREATE UNIQUE INDEX report_entry_counts_key ON report_entry_counts (journey_id, version, day) WHERE NOT delta;

-- What a step outcome is counted under: a send's reason up to its first ": " (the rest names the cap, the
-- provider's words...), any other step's reason whole (exits, hand-overs).
CREATE FUNCTION report_reason(step_type text, detail jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN step_type = 'send' THEN split_part(detail->>'reason', ': ', 1) ELSE detail->>'reason' END
$$;

CREATE FUNCTION report_count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO report_outcome_counts (journey_id, journey_version, day, step_id, step_type, outcome, reason,
                                           visits, entries)
        VALUES (OLD.journey_id, OLD.journey_version, (OLD.recorded_at AT TIME ZONE 'UTC')::date, OLD.step_id,
                OLD.step_type, OLD.outcome, report_reason(OLD.step_type, OLD.detail), -1,
                -(OLD.visit = 1)::int);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO report_outcome_counts (journey_id, journey_version, day, step_id, step_type, outcome, reason,
                                           visits, entries)
        VALUES (NEW.journey_id, NEW.journey_version, (NEW.recorded_at AT TIME ZONE 'UTC')::date, NEW.step_id,
                NEW.step_type, NEW.outcome, report_reason(NEW.step_type, NEW.detail), 1, (NEW.visit = 1)::int);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER step_outcomes_counted AFTER INSERT OR DELETE ON step_outcomes
    FOR EACH ROW EXECUTE FUNCTION report_count_outcome();
CREATE TRIGGER step_outcomes_recounted AFTER UPDATE ON step_outcomes FOR EACH ROW
    WHEN ((OLD.journey_id, OLD.journey_version, OLD.recorded_at, OLD.step_id, OLD.step_type, OLD.outcome,
           report_reason(OLD.step_type, OLD.detail), OLD.visit = 1)
          IS DISTINCT FROM (NEW.journey_id, NEW.journey_version, NEW.recorded_at, NEW.step_id, NEW.step_type,
           NEW.outcome, report_reason(NEW.step_type, NEW.detail), NEW.visit = 1))
    EXECUTE FUNCTION report_count_outcome();

CREATE FUNCTION report_count_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO report_message_counts (journey_id, journey_version, day, step_id, channel, status, messages)
        VALUES (OLD.journey_id, OLD.journey_version, (OLD.created_at AT TIME ZONE 'UTC')::date, OLD.step_id,
                OLD.channel, OLD.status, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO report_message_counts (journey_id, journey_version, day, step_id, channel, status, messages)
        VALUES (NEW.journey_id, NEW.journey_version, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.step_id,
                NEW.channel, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_counted AFTER INSERT OR DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION report_count_message();
CREATE TRIGGER messages_recounted AFTER UPDATE ON messages FOR EACH ROW
    WHEN ((OLD.journey_id, OLD.journey_version, OLD.created_at, OLD.step_id, OLD.channel, OLD.status)
          IS DISTINCT FROM (NEW.journey_id, NEW.journey_version, NEW.created_at, NEW.step_id, NEW.channel, NEW.status))
    EXECUTE FUNCTION report_count_message();

CREATE FUNCTION report_count_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO report_entry_counts (journey_id, version, day, entries)
        VALUES (OLD.journey_id, OLD.version, (OLD.entered_at AT TIME ZONE 'UTC')::date, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO report_entry_counts (journey_id, version, day, entries)
        VALUES (NEW.journey_id, NEW.version, (NEW.entered_at AT TIME ZONE 'UTC')::date, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER journey_entries_counted AFTER INSERT OR DELETE ON journey_entries
    FOR EACH ROW EXECUTE FUNCTION report_count_entry();
CREATE TRIGGER journey_entries_recounted AFTER UPDATE ON journey_entries FOR EACH ROW
    WHEN ((OLD.journey_id, OLD.version, OLD.entered_at) IS DISTINCT FROM (NEW.journey_id, NEW.version, NEW.entered_at))
    EXECUTE FUNCTION report_count_entry();

-- What was recorded before this migration, counted once (the triggers above hold the tables' write locks until the
-- migration commits, so no write falls between the two).
INSERT INTO report_outcome_counts (journey_id, journey_version, day, step_id, step_type, outcome, reason, visits,
                                   entries, delta)
SELECT journey_id, journey_version, (recorded_at AT TIME ZONE 'UTC')::date, step_id, step_type, outcome,
       report_reason(step_type, detail), count(*), count(*) FILTER (WHERE visit = 1), false
  FROM step_outcomes GROUP BY 1, 2, 3, 4, 5, 6, 7;
INSERT INTO report_message_counts (journey_id, journey_version, day, step_id, channel, status, messages, delta)
SELECT journey_id, journey_version, (created_at AT TIME ZONE 'UTC')::date, step_id, channel, status, count(*), false
  FROM messages GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO report_entry_counts (journey_id, version, day, entries, delta)
SELECT journey_id, version, (entered_at AT TIME ZONE 'UTC')::date, count(*), false FROM journey_entries GROUP BY 1, 2, 3;

-- The variant filter and the experiment arms: the entries that took each split variant, and the holdout.
CREATE INDEX step_outcomes_arms ON step_outcomes (journey_id, step_id, outcome, entry_id)
    INCLUDE (journey_version, recorded_at, visit)
    WHERE step_type IN ('split', 'holdout');
-- Conversions joined to their entry (time to convert) and to their arms.
CREATE INDEX journey_entries_report ON journey_entries (journey_id, entry_id) INCLUDE (entered_at, version);
CREATE INDEX conversions_report ON conversions (journey_id, converted_at) INCLUDE (entry_id, value, journey_version);

-- Opens and clicks (interim, until messages carry their own engagement): events named email_opened (property
-- machine true/false) and email_clicked carrying the message's idempotency key as message_key. Which messages were
-- opened (by anyone / by a human) and clicked, by message id (ids survive an erasure, keys do not), and the counts
-- of first opens and clicks per journey, version, day the message was decided, step and channel.
CREATE TABLE report_engaged_messages (
    message_id    bigint PRIMARY KEY,
    opened        boolean NOT NULL DEFAULT false,
    opened_human  boolean NOT NULL DEFAULT false,
    clicked       boolean NOT NULL DEFAULT false
);
CREATE TABLE report_engagement_counts (
    journey_id       text NOT NULL,
    journey_version  integer NOT NULL,
    day              date NOT NULL,
    step_id          text NOT NULL,
    channel          text NOT NULL,
    opened           bigint NOT NULL,
    opened_human     bigint NOT NULL,
    clicked          bigint NOT NULL,
    delta            boolean NOT NULL DEFAULT true
);
CREATE INDEX report_engagement_counts_journey ON report_engagement_counts (journey_id, delta);
CREATE UNIQUE INDEX report_engagement_counts_key ON report_engagement_counts
    (journey_id, journey_version, day, step_id, channel) WHERE NOT delta;

-- A message's first open (first human open, first click) adds one. Concurrent events of one message serialise on
-- its report_engaged_messages row, so none is counted twice.
CREATE FUNCTION report_count_engagement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    m messages%ROWTYPE;
    was report_engaged_messages%ROWTYPE;
    first_open boolean := NEW.name = 'email_opened';
    first_human boolean := NEW.name = 'email_opened' AND (NEW.properties->>'machine') IS DISTINCT FROM 'true';
    first_click boolean := NEW.name = 'email_clicked';
BEGIN
    SELECT * INTO m FROM messages WHERE idempotency_key = NEW.properties->>'message_key';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO report_engaged_messages (message_id) VALUES (m.id) ON CONFLICT (message_id) DO NOTHING;
    SELECT * INTO was FROM report_engaged_messages WHERE message_id = m.id FOR UPDATE;
    first_open := first_open AND NOT was.opened;
    first_human := first_human AND NOT was.opened_human;
    first_click := first_click AND NOT was.clicked;
    IF first_open OR first_human OR first_click THEN
        UPDATE report_engaged_messages
           SET opened = was.opened OR first_open, opened_human = was.opened_human OR first_human,
               clicked = was.clicked OR first_click
         WHERE message_id = m.id;
        INSERT INTO report_engagement_counts (journey_id, journey_version, day, step_id, channel, opened,
                                              opened_human, clicked)
        VALUES (m.journey_id, m.journey_version, (m.created_at AT TIME ZONE 'UTC')::date, m.step_id, m.channel,
                first_open::int, first_human::int, first_click::int);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_engagement_counted AFTER INSERT ON events FOR EACH ROW
    WHEN (NEW.name IN ('email_opened', 'email_clicked') AND NEW.properties ? 'message_key')
    EXECUTE FUNCTION report_count_engagement();

INSERT INTO report_engaged_messages (message_id, opened, opened_human, clicked)
SELECT m.id, bool_or(e.name = 'email_opened'),
       bool_or(e.name = 'email_opened' AND (e.properties->>'machine') IS DISTINCT FROM 'true'),
       bool_or(e.name = 'email_clicked')
  FROM events e JOIN messages m ON m.idempotency_key = e.properties->>'message_key'
 WHERE e.name IN ('email_opened', 'email_clicked')
 GROUP BY m.id;
INSERT INTO report_engagement_counts (journey_id, journey_version, day, step_id, channel, opened, opened_human,
                                      clicked, delta)
SELECT m.journey_id, m.journey_version, (m.created_at AT TIME ZONE 'UTC')::date, m.step_id, m.channel,
       count(*) FILTER (WHERE e.opened), count(*) FILTER (WHERE e.opened_human), count(*) FILTER (WHERE e.clicked),
       false
  FROM report_engaged_messages e JOIN messages m ON m.id = e.message_id
 GROUP BY 1, 2, 3, 4, 5;
