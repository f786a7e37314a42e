-- Constant-time stats: per-user counters, never count(*) at read time.
--
-- Session counts follow every status change through a trigger (sessions change rarely).
-- Message counts are added by the batch writer in the same transaction as the rows and the
-- sessions' own message_count (storage/writer.py); deleting a session takes its messages off.
-- `chat-gateway verify-counts [--fix]` recomputes everything and reports or repairs drift.

CREATE TABLE user_stats (
    user_id            text   PRIMARY KEY,
    sessions_active    bigint NOT NULL DEFAULT 0,
    sessions_archived  bigint NOT NULL DEFAULT 0,
    messages           bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION user_stats_follow_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_active   bigint := 0;
    d_archived bigint := 0;
    d_messages bigint := 0;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status IS NOT DISTINCT FROM NEW.status THEN
            RETURN NULL;
        END IF;
        IF OLD.status = 'active' THEN
            d_active := d_active - 1;
        ELSIF OLD.status = 'archived' THEN
            d_archived := d_archived - 1;
        END IF;
        IF NEW.status = 'deleted' THEN
            d_messages := -OLD.message_count;
        END IF;
    END IF;
    IF NEW.status = 'active' THEN
        d_active := d_active + 1;
    ELSIF NEW.status = 'archived' THEN
        d_archived := d_archived + 1;
    END IF;
    INSERT INTO user_stats AS u (user_id, sessions_active, sessions_archived, messages)
    VALUES (NEW.user_id, d_active, d_archived, d_messages)
    ON CONFLICT (user_id) DO UPDATE
       SET sessions_active = u.sessions_active + excluded.sessions_active,
           sessions_archived = u.sessions_archived + excluded.sessions_archived,
           messages = u.messages + excluded.messages;
    RETURN NULL;
END
$$;

CREATE TRIGGER user_stats_follow_sessions
    AFTER INSERT OR UPDATE OF status ON sessions
    FOR EACH ROW EXECUTE FUNCTION user_stats_follow_sessions();

-- Counters for what exists already.
INSERT INTO user_stats (user_id, sessions_active, sessions_archived, messages)
SELECT user_id,
       count(*) FILTER (WHERE status = 'active'),
       count(*) FILTER (WHERE status = 'archived'),
       coalesce(sum(message_count) FILTER (WHERE status <> 'deleted'), 0)
  FROM sessions
 GROUP BY user_id;
