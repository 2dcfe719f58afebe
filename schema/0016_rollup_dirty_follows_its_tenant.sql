-- 0016: a dirty rollup hour goes with its tenant. rollup_dirty was the one tenant table
-- besides reports (deleted first, by name: tenants.sql delete_tenant_reports) without a
-- foreign key to tenants, so `civicpulse tenant delete` left the hours the aggregator had
-- not yet taken, and the aggregator would then recompute hours for a tenant that is gone.
-- The trigger adds a few rows per statement (one per distinct hour), so the key's check
-- costs what the other tenant tables' already cost.
DELETE FROM rollup_dirty d WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = d.tenant_id);
ALTER TABLE rollup_dirty
    ADD CONSTRAINT rollup_dirty_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;
