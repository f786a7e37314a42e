-- keeps data: automatic titles are derived from the messages; re-applying 0004 recomputes them
--
-- Undoes 0004_session_auto_title.sql: the column, then the two functions, in reverse order.
-- 0004's backfill sets each title again by the writer's rule, from the first user message among
-- the session's first 50, with two differences: deleted sessions (never shown) come back
-- without one, and a title taken before that message was edited comes back from the edit.

ALTER TABLE sessions DROP COLUMN auto_title;

DROP FUNCTION session_first_user_line(uuid);
DROP FUNCTION session_auto_title(text);
