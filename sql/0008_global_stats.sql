-- Global totals beside the per-user counters (issue 17): users, sessions by status and
-- messages over everyone, read in constant time (`storage/stats.py`, `GET /api/stats/global`).
--
-- They follow `user_stats` through a trigger, so every path that keeps the per-user counters
-- (the sessions trigger of 0002, the batch writer, `verify-counts --fix`) keeps these too,
-- with nothing more to remember. A user is a row of `user_stats`: someone who has had a
-- session.
--
-- Sixteen rows, summed at read time: a single row would be locked by every writer's batch
-- from its counter update to its commit, and two writers would queue on it. A backend adds to
-- the row of its process id modulo 16, so concurrent writers (other backends) rarely meet.

CREATE TABLE global_stats (
    shard             smallint PRIMARY KEY CHECK (shard BETWEEN 0 AND 15),
    users             bigint   NOT NULL DEFAULT 0,
    sessions_active   bigint   NOT NULL DEFAULT 0,
    sessions_archived bigint   NOT NULL DEFAULT 0,
    messages          bigint   NOT NULL DEFAULT 0
);

INSERT INTO global_stats (shard) SELECT generate_series(0, 15);

CREATE FUNCTION global_stats_follow_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- OLD is NULL for an INSERT and NEW for a DELETE: coalesce makes each side count 0.
    UPDATE global_stats
       SET users = users + CASE TG_OP WHEN 'INSERT' THEN 1 WHEN 'DELETE' THEN -1 ELSE 0 END,
           sessions_active = sessions_active
               + coalesce(NEW.sessions_active, 0) - coalesce(OLD.sessions_active, 0),
           sessions_archived = sessions_archived
               + coalesce(NEW.sessions_archived, 0) - coalesce(OLD.sessions_archived, 0),
           messages = messages + coalesce(NEW.messages, 0) - coalesce(OLD.messages, 0)
     WHERE shard = pg_backend_pid() % 16;
    RETURN NULL;
END
$$;

CREATE TRIGGER global_stats_follow_users
    AFTER INSERT OR UPDATE OR DELETE ON user_stats
    FOR EACH ROW EXECUTE FUNCTION global_stats_follow_users();

-- The totals of what exists already.
UPDATE global_stats g
   SET users = t.users, sessions_active = t.active, sessions_archived = t.archived,
       messages = t.messages
  FROM (SELECT count(*) AS users, coalesce(sum(sessions_active), 0) AS active,
               coalesce(sum(sessions_archived), 0) AS archived,
               coalesce(sum(messages), 0) AS messages
          FROM user_stats) AS t
 WHERE g.shard = 0;

-- `chat-gateway purge` finds the sessions deleted long enough ago without reading the others.
CREATE INDEX sessions_deleted ON sessions (deleted_at) WHERE status = 'deleted';
