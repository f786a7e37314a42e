-- A label per user and port (issue 16): the name a person gives a port, the project's name
-- say, shown beside its IDE type in every client. One row per labelled port; clearing the
-- label deletes the row. Ports themselves have no table: a port is the sessions on it.
CREATE TABLE port_labels (
    user_id    text        NOT NULL,
    port       integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    label      text        NOT NULL CHECK (label <> ''),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, port)
);
