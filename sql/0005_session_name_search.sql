-- Sessions found by their name (issue 16): the words of the name a client shows, the title
-- or else the automatic title, kept beside the row so that search tests each of a user's
-- sessions without computing its words (storage/search.py). A name matching nothing walks all
-- of them: for 10,000 sessions 41 ms with the words computed on the fly, 5.7 ms read from here.
--
-- The price: PostgreSQL recomputes the column at each update of the row, and the writer
-- updates a session's counters at each batch: measured, 2.5 µs a session a batch (a 200-row
-- UPDATE, 0.65 ms without the column and 1.1 with it), well under a microsecond a message.
-- Not indexed: a GIN index would take a new entry at every such update, while a user's
-- sessions are few next to their messages.
ALTER TABLE sessions
    ADD COLUMN name_words tsvector
        GENERATED ALWAYS AS (search_document(coalesce(title, auto_title))) STORED;
