-- Core schema: sessions and their messages.
--
-- Ingest writes messages with COPY, so this table carries only the indexes the hot reads need.
-- There is deliberately no foreign key from messages to sessions: an RI check per COPYed row
-- costs ingest throughput, sessions are never hard-deleted (DELETE is a soft delete), and the
-- writer only writes session ids that were allocated in this table first.

CREATE TABLE sessions (
    id               uuid PRIMARY KEY,
    user_id          text        NOT NULL,
    port             integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    ide_type         text        NOT NULL,
    title            text,
    status           text        NOT NULL DEFAULT 'active'
                                 CHECK (status IN ('active', 'archived', 'deleted')),
    pinned           boolean     NOT NULL DEFAULT false,
    message_count    bigint      NOT NULL DEFAULT 0,
    last_message_at  timestamptz,
    -- Newest of created_at and last_message_at: one plain column so "a user's sessions by
    -- recent activity" is a single index range scan.
    activity_at      timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    archived_at      timestamptz,
    deleted_at       timestamptz
);

-- At most one active session per (user, port): racing creators meet here.
CREATE UNIQUE INDEX sessions_one_active ON sessions (user_id, port) WHERE status = 'active';
-- A user's sessions, newest activity first (keyset on (activity_at, id)).
CREATE INDEX sessions_by_activity ON sessions (user_id, activity_at DESC, id DESC);
-- A port's sessions (its history across rotations).
CREATE INDEX sessions_by_port ON sessions (user_id, port, created_at DESC);

CREATE TABLE messages (
    session_id    uuid        NOT NULL,
    seq           bigint      NOT NULL CHECK (seq > 0),
    id            uuid        NOT NULL,
    user_id       text        NOT NULL,
    port          integer     NOT NULL,
    client_id     text,
    -- 128-bit digest of the dedup key (client id, else the content fingerprint); see
    -- gateway/protocol.py. A uuid column keeps the unique index small and fast.
    dedup_key     uuid        NOT NULL,
    role          text        NOT NULL,
    content       text        NOT NULL,
    content_type  text        NOT NULL,
    source        text        NOT NULL,
    client_ts     timestamptz,
    created_at    timestamptz NOT NULL,
    edited_at     timestamptz,
    metadata      jsonb       NOT NULL DEFAULT '{}',
    -- A session's history in seq order is a primary-key range scan.
    PRIMARY KEY (session_id, seq),
    -- Idempotency backstop: a batch written twice can never store a message twice.
    UNIQUE (session_id, dedup_key)
);

-- A port's newest messages across its sessions.
CREATE INDEX messages_port_newest ON messages (user_id, port, created_at DESC);
