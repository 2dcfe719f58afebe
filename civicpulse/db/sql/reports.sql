-- Reports: intake, lookup, pipeline claims. Every query runs under a tenant's RLS setting
-- except claim_reports, which goes through the audited SECURITY DEFINER function.

-- name: insert_reports
-- One set-based insert per tenant per flush; a repeated idempotency key inserts nothing and
-- is resolved by find_idempotent_reports in the same transaction.
INSERT INTO reports (
    tenant_id, id, text, lat, lon, address, requested_category, submitted_at, channel,
    reporter, attributes, media_urls, idempotency_key, body_hash
)
SELECT $1, u.id, u.text, u.lat, u.lon, u.address, u.requested_category,
       COALESCE(u.submitted_at, now()), u.channel, u.reporter::jsonb, u.attributes::jsonb,
       u.media_urls::jsonb, u.idempotency_key, u.body_hash
  FROM unnest($2::uuid[], $3::text[], $4::float8[], $5::float8[], $6::text[], $7::text[],
              $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[],
              $13::text[], $14::bytea[])
       AS u (id, text, lat, lon, address, requested_category, submitted_at, channel,
             reporter, attributes, media_urls, idempotency_key, body_hash)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id

-- name: find_idempotent_reports
SELECT id, idempotency_key, body_hash, state
  FROM reports
 WHERE tenant_id = $1 AND idempotency_key = ANY($2::text[])

-- name: get_report
SELECT id, state, text, lat, lon, address, requested_category, category, severity,
       classification, issue_id, channel, submitted_at, received_at, processed_at,
       attributes, media_urls
  FROM reports
 WHERE tenant_id = $1 AND id = $2

-- name: claim_reports
SELECT tenant_id, id FROM civicpulse_claim_reports($1, $2, $3)

-- name: load_claimed_reports
SELECT id, text, requested_category
  FROM reports
 WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND lease_owner = $3 AND state = 'received'

-- name: finish_classified
-- Only the lease holder finishes: a worker whose lease expired and was re-claimed elsewhere
-- updates nothing here.
UPDATE reports r
   SET state = 'classified',
       category = u.category,
       severity = u.severity,
       classification = u.classification::jsonb,
       processed_at = now(),
       lease_owner = NULL,
       lease_until = NULL
  FROM unnest($2::uuid[], $3::text[], $4::int2[], $5::text[])
       AS u (id, category, severity, classification)
 WHERE r.tenant_id = $1 AND r.id = u.id AND r.lease_owner = $6 AND r.state = 'received'

-- name: count_reports
SELECT count(*) FROM reports WHERE tenant_id = $1

-- name: import_stage_create
CREATE TEMP TABLE import_stage (
    line integer, source_id text, text text, lat float8, lon float8, address text,
    category text, submitted_at timestamptz, channel text, attribute_values text[]
) ON COMMIT DROP

-- name: import_from_stage
-- COPY cannot write a table under RLS, so rows land in a temp table first and move over
-- in one INSERT ... SELECT that the tenant policy checks. $2 names the attribute values.
INSERT INTO reports (
    tenant_id, id, text, lat, lon, address, requested_category, category, submitted_at,
    channel, attributes, source, source_id, state, processed_at, classification
)
SELECT $1, civicpulse_uuid7(), s.text, s.lat, s.lon, s.address, s.category, s.category,
       s.submitted_at, s.channel,
       jsonb_strip_nulls(jsonb_object($2::text[], s.attribute_values)), $3, s.source_id,
       'imported', now(), '{"decided_by": "import"}'::jsonb
  FROM import_stage s
ON CONFLICT (tenant_id, source, source_id) WHERE source_id IS NOT NULL DO NOTHING

-- name: list_reports
-- Keyset pagination, newest first: UUIDv7 ids are time-ordered, so the primary key
-- (tenant_id, id) serves both the filter and the order.
SELECT id, state, text, lat, lon, address, requested_category, category, severity,
       classification, issue_id, channel, submitted_at, received_at, processed_at,
       attributes, media_urls
  FROM reports
 WHERE tenant_id = $1
   AND ($2::text IS NULL OR state = $2)
   AND ($3::uuid IS NULL OR id < $3)
 ORDER BY id DESC
 LIMIT $4
