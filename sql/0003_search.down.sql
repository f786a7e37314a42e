-- keeps data: the search index is derived from messages; `chat-gateway reindex` rebuilds it
--
-- Undoes 0003_search.sql: the index table with its indexes, then the search functions, in
-- reverse order. Re-applying 0003 creates `message_search` empty, and the indexer then indexes
-- only the messages written from then on: until `chat-gateway reindex` has indexed the others
-- (storage/indexer.py's catch-up scan), search finds only new messages.

DROP INDEX message_search_port_newest;
DROP INDEX message_search_newest;
DROP INDEX message_search_tsv;
DROP TABLE message_search;

DROP FUNCTION search_query(text);
DROP FUNCTION search_document(text);
DROP FUNCTION search_normalize(text);
