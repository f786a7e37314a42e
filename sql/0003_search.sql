-- Full-text search: a separate table filled off the ingest hot path (see docs/search.md).
--
-- `messages` gets no search column and no search index: a GIN index on a generated tsvector
-- column of `messages` cut COPY ingest several-fold. The indexer (storage/indexer.py) reads
-- the committed (session_id, seq) keys the writer announces on the index stream and upserts
-- them here in large batches; a catch-up scan indexes rows the stream lost.

-- What is searchable in a message, defined once for the indexer and the query side.
--
-- 'simple' (no stemming, no stopwords): chat carries code, where `if`, `for`, `in` or `not`
-- are keywords that 'english' would drop, and stemming mangles identifiers.
-- Lowercasing is done first under the builtin Unicode collation: 'simple' lowercases by the
-- database's ctype, which in the C locale leaves `École` unmatched by `école`.
-- Dots, slashes, backslashes, @, < and > become underscores, which the parser splits on:
-- `self.baz_qux`, `src/app.py` and `user@example.com` index their parts (`baz`, `app`,
-- `example`) while a query for the whole thing stays one word, i.e. a phrase of the same parts;
-- and `<div className="x">` or `Vec<String>` are not swallowed whole as an HTML tag, which
-- the parser would skip. (Nested replace() costs a tenth of translate().)
CREATE FUNCTION search_normalize(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN lower(replace(replace(replace(replace(replace(replace(
        t, '.', '_'), '/', '_'), '\', '_'), '@', '_'), '<', '_'), '>', '_') COLLATE pg_c_utf8);

CREATE FUNCTION search_document(content text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN to_tsvector('simple'::regconfig, search_normalize(content));

-- A user's query in websearch syntax ("a phrase", -word, or): never raises, whatever the input.
CREATE FUNCTION search_query(q text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN websearch_to_tsquery('simple'::regconfig, search_normalize(q));

CREATE TABLE message_search (
    session_id  uuid        NOT NULL,
    seq         bigint      NOT NULL,
    user_id     text        NOT NULL,
    port        integer     NOT NULL,
    created_at  timestamptz NOT NULL,
    -- The version indexed: an indexer never replaces a newer edit's vector with an older one
    -- (indexers may commit out of order), and catch-up finds rows edited since.
    edited_at   timestamptz,
    tsv         tsvector    NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- fastupdate: batches land in the pending list and are merged into the tree in bulk.
CREATE INDEX message_search_tsv ON message_search USING gin (tsv) WITH (fastupdate = on);

-- A user's matches newest first, overall and per port: for a word in a large share of the
-- messages, search ranks only the newest matches (storage/search.py) and finds them by walking
-- one of these instead of the GIN index.
CREATE INDEX message_search_newest ON message_search (user_id, created_at DESC);
CREATE INDEX message_search_port_newest ON message_search (user_id, port, created_at DESC);
