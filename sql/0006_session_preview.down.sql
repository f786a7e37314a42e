-- keeps data: previews are derived from the messages; re-applying 0006 recomputes them
--
-- Undoes 0006_session_preview.sql: the three columns, then the function, in reverse order.
-- 0006's backfill sets each preview again from the session's last message with
-- `session_preview`, the SQL twin of the writer's `preview_of` (tests/test_sessions.py holds
-- them to one another); deleted sessions (never shown) come back without one.

ALTER TABLE sessions
    DROP COLUMN preview_seq,
    DROP COLUMN preview_role,
    DROP COLUMN preview;

DROP FUNCTION session_preview(text);
