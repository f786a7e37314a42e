-- keeps data: name_words is a generated column; re-applying 0005 computes it again for each row
--
-- Undoes 0005_session_name_search.sql.

ALTER TABLE sessions DROP COLUMN name_words;
