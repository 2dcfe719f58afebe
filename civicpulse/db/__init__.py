"""Everything that talks to PostgreSQL: pool, embedded server, migrations, repositories."""
