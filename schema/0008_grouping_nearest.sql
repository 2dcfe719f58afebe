-- 0008: the grouping candidate lookup ranks the open issues in each report's reach and reads
-- the heap only for the nearest few (civicpulse/db/sql/issues.sql, open_issue_candidates).
-- The index is rebuilt inside the migration's transaction, which blocks writes to issues
-- while it builds (seconds for a million open issues: it holds open issues only); run the
-- migration in a quiet period on a large database.

-- Serves open_issue_candidates: (tenant_id, category, cell) finds the issues of a category in
-- a cell; id, lat, lon and last_reported are carried so the ranking step is an index-only
-- scan (measured at 1M open issues: bench/results/dedup_scale_nearest.md). Partial, so
-- closed history never slows the lookup down.
DROP INDEX issues_open_category_cell;
CREATE INDEX issues_open_category_cell ON issues (tenant_id, category, cell)
    INCLUDE (last_reported, lat, lon, id)
    WHERE civicpulse_is_open(status);
