-- A session's automatic title: the first line of its first user message, so that untitled
-- sessions read as what they are about, the same in every client (issue 16).
--
-- The batch writer sets it in the transaction that commits the session's rows, while it is
-- NULL, from the first user message among the session's first 50 (storage/writer.py). Stored
-- rather than computed at each read: the session list reads it for 50 sessions a page, and
-- the session events carry it.

-- What the title is made of, defined once for the writer and for this backfill: the first
-- non-blank line, without leading markdown marks (#, >, -, *, `), at most 80 characters.
CREATE FUNCTION session_auto_title(content text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN nullif(left(btrim(regexp_replace(
        substring(content FROM '[^\s][^\n]*'), '^[#>*`\s-]+', '')), 80), '');

-- The first user message among a session's first 50 (an index range on (session_id, seq)):
-- a session that starts with more than 50 other messages keeps no automatic title.
CREATE FUNCTION session_first_user_line(sid uuid) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    RETURN (SELECT session_auto_title(m.content) FROM messages m
             WHERE m.session_id = sid AND m.seq <= 50 AND m.role = 'user'
             ORDER BY m.seq LIMIT 1);

ALTER TABLE sessions ADD COLUMN auto_title text;

UPDATE sessions SET auto_title = session_first_user_line(id) WHERE status <> 'deleted';
