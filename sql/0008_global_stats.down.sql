-- keeps data: the global totals are sums of user_stats; re-applying 0008 sums them again
--
-- Undoes 0008_global_stats.sql in reverse order: purge's index, the trigger, its function and
-- the totals table. Nothing users wrote is here.

DROP INDEX sessions_deleted;
DROP TRIGGER global_stats_follow_users ON user_stats;
DROP FUNCTION global_stats_follow_users();
DROP TABLE global_stats;
