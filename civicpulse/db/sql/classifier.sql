-- Local classifier models and their training labels.

-- name: latest_model
SELECT version, digest, taxonomy_digest, labels, model
  FROM classifier_models
 WHERE tenant_id = $1
 ORDER BY version DESC
 LIMIT 1

-- name: insert_model
-- Two processes retraining at once: the second insert of a version number does nothing.
INSERT INTO classifier_models (tenant_id, version, labels, features, digest, taxonomy_digest,
                               model)
SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, $4, $5, $6
  FROM classifier_models
 WHERE tenant_id = $1
ON CONFLICT DO NOTHING
RETURNING version

-- name: prune_models
-- Older versions than the ones kept (db/classifier.py KEPT_MODELS), by primary key.
DELETE FROM classifier_models WHERE tenant_id = $1 AND version <= $2

-- name: labelled_reports
-- The newest labels first, capped: training time and model size stay bounded.
SELECT text, category
  FROM reports
 WHERE tenant_id = $1 AND label_source IS NOT NULL AND category IS NOT NULL
 ORDER BY id DESC
 LIMIT $2

-- name: count_labels
SELECT count(*) FROM reports WHERE tenant_id = $1 AND label_source IS NOT NULL

-- name: tenant_by_id
SELECT id, slug, name, timezone, config FROM tenants WHERE id = $1

-- name: latest_model_version
-- Checked on every claim, so a model trained by another process (`classifier train`) is used
-- from the next claim on. The primary key (tenant_id, version) answers it backwards.
SELECT max(version) FROM classifier_models WHERE tenant_id = $1
