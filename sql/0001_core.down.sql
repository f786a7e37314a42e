-- loses data: every session and every message
--
-- Undoes 0001_core.sql: its tables with their indexes, in reverse order. Everything users
-- wrote lives in these two tables; nothing brings it back.

DROP INDEX messages_port_newest;
DROP TABLE messages;

DROP INDEX sessions_by_port;
DROP INDEX sessions_by_activity;
DROP INDEX sessions_one_active;
DROP TABLE sessions;
