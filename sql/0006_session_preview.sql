-- A preview of each session's last message, for the session list (issue 16): the first
-- words of the message with the highest seq, and its role, so every client shows the same
-- preview, live with the session events.
--
-- The batch writer sets it from the rows it commits (storage/writer.py, computed in Python by
-- `storage.sessions.preview_of`): the session's highest seq of the batch, unless a higher one
-- is the preview already (`preview_seq`: two writers may commit out of seq order); an edit of
-- that message renews it. Computed in SQL at each batch it cost 74 µs a session (PostgreSQL's
-- regular expressions, on 500 characters); in Python, on 300, 4–10 µs (storage/sessions.py).

-- The same rule as `preview_of`, for the backfill below only (tests/test_sessions.py checks
-- that the two agree): the first 300 characters, markdown's code fences, backticks, bold and
-- strike marks and heading and quote marks dropped, white space collapsed, at most 120
-- characters.
CREATE FUNCTION session_preview(content text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN nullif(rtrim(left(btrim(regexp_replace(
        regexp_replace(regexp_replace(substr(content, 1, 300), '`{3,}[[:alnum:]_+#.-]*|`|\*\*|~~', '', 'g'),
                       '^(#+[ \t]|>[ \t]?)', '', 'gn'),
        '\s+', ' ', 'g')), 120)), '');

ALTER TABLE sessions
    ADD COLUMN preview text,
    ADD COLUMN preview_role text,
    ADD COLUMN preview_seq bigint;

-- One backward probe of the messages' primary key a session.
UPDATE sessions s
   SET (preview, preview_role, preview_seq) =
       (SELECT session_preview(m.content), m.role, m.seq FROM messages m
         WHERE m.session_id = s.id ORDER BY m.seq DESC LIMIT 1)
 WHERE s.status <> 'deleted' AND s.message_count > 0;
