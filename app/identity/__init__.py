"""Who may do what: users, login and API tokens (auth), groups and namespace grants (access), the audit trail
(audit), login rate limits (ratelimit), and the SQL database they live in (database, migrations/)."""
