-- The distribution plan: what a Citus cluster runs, after the migrations, to spread the
-- schema over workers by tenant. Every tenant's rows of every distributed table live on one
-- worker (colocated with `issues`), so each request, claim and dashboard read is a
-- single-worker query, as it is on one PostgreSQL today. tests/integration/
-- test_distribution_ready.py holds the schema to this plan: every table is in it once, and
-- every primary key, unique index and foreign key of a distributed table includes tenant_id.
--
--   psql "$COORDINATOR_URL" -f ops/citus/distribute.sql

-- Reference tables: small, read by every worker, written rarely.
-- tenants: the registry every tenant foreign key points at.
SELECT create_reference_table('tenants');
-- api_keys: a request's key is looked up by its hash before the tenant is known (and
-- civicpulse_touch_api_keys stamps keys by id alone), so it cannot be found on a worker by
-- tenant; it is tens of thousands of rows.
SELECT create_reference_table('api_keys');

-- Distributed by tenant, colocated with issues: a tenant's rows together.
SELECT create_distributed_table('issues', 'tenant_id');
SELECT create_distributed_table('reports', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('issue_events', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('tenant_event_counters', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('categories', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('not_duplicates', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('classifier_models', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('places', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('place_versions', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('teams', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('areas', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('calendars', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('sla_policies', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('rule_sets', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('sla_timers', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('rollup_hourly', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('rollup_daily', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('rollup_dirty', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('daily_snapshots', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('dashboards', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('dashboard_widgets', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('tenant_rate_limits', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('audit_log', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('users', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('sessions', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('geocoders', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('geocodes', 'tenant_id', colocate_with => 'issues');
SELECT create_distributed_table('web_forms', 'tenant_id', colocate_with => 'issues');
