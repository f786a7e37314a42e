"""chat-gateway's storage: what faces PostgreSQL and Redis, and nothing that faces clients
(it never imports `gateway`; tests/test_layout.py holds it to that). The ingest buffer and
its Lua scripts (`lua/`), the batch writer and the search indexer, the queries, migrations
and the embedded servers (docs/architecture.md)."""
