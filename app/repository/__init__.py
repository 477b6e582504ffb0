"""The repository as a running whole: the Service that holds a data dir's stores, identity and active schema
(service, datadir, schema_store: its versions), and the work done across the stores (replication, gc)."""
