-- Operators' reports (civicpulse explain, civicpulse db stats) and the realistic parameters
-- the hot queries are explained with.

-- name: tenant_for_explain
-- The named tenant, or with $1 NULL the one with the most issues (where plans matter most).
SELECT t.id, t.slug
  FROM tenants t
  LEFT JOIN issues i ON i.tenant_id = t.id
 WHERE $1::text IS NULL OR t.slug = $1
 GROUP BY t.id
 ORDER BY count(i.id) DESC, t.id
 LIMIT 1

-- name: explain_issue_place
SELECT lat, lon, category FROM issues
 WHERE tenant_id = $1 AND lat IS NOT NULL AND civicpulse_is_open(status)
 ORDER BY opened_at DESC
 LIMIT 1

-- name: explain_some_report
SELECT id FROM reports WHERE tenant_id = $1 LIMIT 1

-- name: explain_some_issue
SELECT id FROM issues WHERE tenant_id = $1 LIMIT 1

-- name: explain_last_event
SELECT max(seq) FROM issue_events WHERE tenant_id = $1

-- name: table_rows
SELECT relname, reltuples FROM pg_class
 WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace

-- name: app_role
-- Become the service's role for the rest of the transaction (RLS applies).
SELECT set_config('role', $1, true)

-- name: stats_tables
-- Rows: the planner's estimate once the table was analysed; before that (reltuples -1), the
-- live rows the statistics collector counted, so a fresh table never shows -1.
SELECT c.relname AS table,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE COALESCE(s.n_live_tup, 0) END
           AS rows,
       pg_size_pretty(pg_table_size(c.oid)) AS table_size,
       pg_size_pretty(pg_indexes_size(c.oid)) AS indexes_size,
       pg_total_relation_size(c.oid) AS total_bytes,
       s.seq_scan, s.idx_scan, s.n_live_tup, s.n_dead_tup
  FROM pg_class c
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
 ORDER BY pg_total_relation_size(c.oid) DESC

-- name: stats_indexes
SELECT s.relname AS table, s.indexrelname AS index, s.idx_scan,
       pg_size_pretty(pg_relation_size(s.indexrelid)) AS size,
       pg_relation_size(s.indexrelid) AS bytes, i.indisunique AS is_unique,
       i.indisprimary AS is_primary
  FROM pg_stat_user_indexes s
  JOIN pg_index i ON i.indexrelid = s.indexrelid
 WHERE s.schemaname = 'public'
 ORDER BY s.relname, s.indexrelname

-- name: stats_has_statements
SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'

-- name: stats_statements
SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
       round(mean_exec_time::numeric, 3) AS mean_ms, rows,
       left(regexp_replace(query, '\s+', ' ', 'g'), 120) AS query
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY total_exec_time DESC
 LIMIT $1

-- name: stats_since
SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()

-- name: stale_tables
-- The tables whose statistics the planner can no longer trust: never analysed though they
-- changed, or changed by more than a fraction ($1) of the rows the planner last counted
-- (reltuples), and by at least $2 rows. One ANALYZE statement each, the name quoted by the
-- server (an identifier cannot be a bound parameter).
SELECT s.relname, format('ANALYZE public.%I', s.relname) AS statement
  FROM pg_stat_user_tables s
  JOIN pg_class c ON c.oid = s.relid
 WHERE s.schemaname = 'public'
   AND s.n_mod_since_analyze >= $2
   AND (COALESCE(s.last_analyze, s.last_autoanalyze) IS NULL
        OR s.n_mod_since_analyze > $1 * GREATEST(c.reltuples, 0))
 ORDER BY s.n_mod_since_analyze DESC

-- name: autovacuum_on
SELECT current_setting('autovacuum')::boolean

-- name: pipeline_backlog
-- Reports received but not yet grouped, across tenants (the tables' owner reads it), and how
-- long the oldest has waited: a read of the partial index reports_pending, which holds only
-- unfinished reports.
SELECT count(*) AS reports,
       COALESCE(extract(epoch FROM now() - min(received_at)), 0)::float8 AS oldest_wait
  FROM reports
 WHERE state IN ('received', 'classified')

-- name: wal_position
-- The primary's WAL write position, in bytes (the replica's lag is measured against it).
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint

-- name: replay_position
-- What a streaming replica has replayed, in bytes; NULL on a server that is not a replica.
SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint
