-- 0002: classification results, training labels, per-tenant local models, report events.

ALTER TABLE reports
    ADD COLUMN summary       text,
    ADD COLUMN hazards       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN language      text,
    ADD COLUMN needs_review  boolean NOT NULL DEFAULT false,
    -- Where a trustworthy category came from ('import' or 'staff'): the training labels.
    ADD COLUMN label_source  text CHECK (label_source IN ('import', 'staff'));

UPDATE reports SET label_source = 'import' WHERE state = 'imported' AND category IS NOT NULL;

-- Serves labelled_reports (training) and count_labels (the retraining trigger): only
-- labelled rows are in it.
CREATE INDEX reports_labels ON reports (tenant_id, id) WHERE label_source IS NOT NULL;
-- Serves the review queue: reports whose classification a person should check.
CREATE INDEX reports_needs_review ON reports (tenant_id, received_at) WHERE needs_review;

-- Trained local classifiers, one row per version; the newest is used.
CREATE TABLE classifier_models (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    trained_at   timestamptz NOT NULL DEFAULT now(),
    labels       integer NOT NULL,
    features     integer NOT NULL,
    digest       text NOT NULL,
    -- The taxonomy the model was trained on: a taxonomy edit makes the model stale.
    taxonomy_digest text NOT NULL,
    model        bytea NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
ALTER TABLE classifier_models ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON classifier_models
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT ON classifier_models TO civicpulse_app;

-- The event log also records changes to reports that belong to no issue yet (a staff
-- correction of a category, say).
ALTER TABLE issue_events
    ALTER COLUMN issue_id DROP NOT NULL,
    ADD COLUMN report_id uuid,
    ADD CONSTRAINT issue_events_subject CHECK (issue_id IS NOT NULL OR report_id IS NOT NULL),
    ADD CONSTRAINT issue_events_report_fkey FOREIGN KEY (tenant_id, report_id)
        REFERENCES reports (tenant_id, id) ON DELETE CASCADE;
-- Serves a report's history.
CREATE INDEX issue_events_report ON issue_events (tenant_id, report_id, id)
    WHERE report_id IS NOT NULL;
