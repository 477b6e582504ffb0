"""What is built on the layers below, for people: the command line (cli, admin_cli), OPERATIONS.md (docs,
doc_sections/), the compliance run, schema templates, and
LocalDepot for tests and probes (testing)."""
