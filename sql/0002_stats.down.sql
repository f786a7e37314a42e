-- keeps data: the per-user counters are derived from sessions; re-applying 0002 recounts them
--
-- Undoes 0002_stats.sql: the trigger, its function and the counters table, in reverse order.
-- Nothing users wrote is here: 0002's backfill recounts every user's sessions and messages from
-- `sessions`, the same figures `chat-gateway verify-counts --fix` repairs counters to.

DROP TRIGGER user_stats_follow_sessions ON sessions;
DROP FUNCTION user_stats_follow_sessions();
DROP TABLE user_stats;
