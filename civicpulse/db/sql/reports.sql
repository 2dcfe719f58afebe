-- Reports: intake, lookup, pipeline claims. Every query runs under a tenant's RLS setting
-- except claim_reports, which goes through the audited SECURITY DEFINER function.

-- name: insert_reports
-- One set-based insert per tenant per flush; a repeated idempotency key inserts nothing and
-- is resolved by find_idempotent_reports in the same transaction.
INSERT INTO reports (
    tenant_id, id, text, lat, lon, address, requested_category, submitted_at, channel,
    reporter, attributes, media_urls, idempotency_key, body_hash, place, key_id, address_key,
    track_hash
)
SELECT $1, u.id, u.text, u.lat, u.lon, u.address, u.requested_category,
       COALESCE(u.submitted_at, now()), u.channel, u.reporter::jsonb, u.attributes::jsonb,
       u.media_urls::jsonb, u.idempotency_key, u.body_hash, u.place, u.key_id, u.address_key,
       u.track_hash
  FROM unnest($2::uuid[], $3::text[], $4::float8[], $5::float8[], $6::text[], $7::text[],
              $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[],
              $13::text[], $14::bytea[], $15::text[], $16::bigint[], $17::text[], $18::bytea[])
       AS u (id, text, lat, lon, address, requested_category, submitted_at, channel,
             reporter, attributes, media_urls, idempotency_key, body_hash, place, key_id,
             address_key, track_hash)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id

-- name: find_idempotent_reports
SELECT id, idempotency_key, body_hash, state
  FROM reports
 WHERE tenant_id = $1 AND idempotency_key = ANY($2::text[])

-- name: get_report
SELECT id, state, text, lat, lon, address, requested_category, category, severity,
       classification, issue_id, channel, submitted_at, received_at, processed_at,
       attributes, media_urls, summary, hazards, language, needs_review, place, place_ref,
       subtype, alternatives, failure, key_id
  FROM reports
 WHERE tenant_id = $1 AND id = $2

-- name: own_report_keys
-- The keys whose reports key $2 may read: itself and every key it replaced, rotation after
-- rotation (a resident app keeps its view of what it sent). Primary-key probes up the chain.
WITH RECURSIVE chain (id, rotated_from, depth) AS (
    SELECT k.id, k.rotated_from, 1 FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $2
    UNION ALL
    SELECT k.id, k.rotated_from, c.depth + 1
      FROM chain c
      JOIN api_keys k ON k.tenant_id = $1 AND k.id = c.rotated_from
     WHERE c.depth < 1000
)
SELECT array_agg(id) FROM chain

-- name: claim_reports
SELECT tenant_id, id FROM civicpulse_claim_reports($1, $2, $3, $4, $5)

-- name: claim_grouping
-- Classified reports in submission order, one claim per tenant at a time (see schema 0009).
SELECT tenant_id, id FROM civicpulse_claim_grouping($1, $2, $3, $4, $5)

-- name: retry_failed_reports
-- Reports set aside go back to the stage they failed in (classification when they have no
-- classification yet, else grouping), their attempts and failure forgotten.
UPDATE reports
   SET state = CASE WHEN classification IS NULL THEN 'received' ELSE 'classified' END,
       attempts = 0, grouping = NULL, failure = NULL, lease_owner = NULL, lease_until = NULL
 WHERE tenant_id = $1 AND state = 'failed'
RETURNING id

-- name: release_failed_claim
-- Reports whose processing failed under this lease: they wait out a backoff that doubles
-- with each attempt ($4 seconds, then twice that..., at most $5 seconds) rather than the whole
-- lease, keeping the error; on their $6th failed attempt they are set aside ('failed').
-- While they wait, their lease still holds the tenant's later reports back from grouping,
-- so submission order is kept.
UPDATE reports
   SET state = CASE WHEN attempts >= $6 THEN 'failed' ELSE state END,
       lease_owner = CASE WHEN attempts >= $6 THEN NULL ELSE lease_owner END,
       lease_until = CASE WHEN attempts >= $6 THEN NULL
                          ELSE now() + make_interval(
                                  secs => least($5::float8, $4::float8 * 2 ^ (attempts - 1)))
                     END,
       failure = CASE WHEN attempts >= $6
                      THEN 'failed in ' || attempts || ' attempts (last error: ' || $7 || ')'
                      ELSE $7 END
 WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND lease_owner = $3
   AND state IN ('received', 'classified')
RETURNING id, state

-- name: load_claimed_reports
SELECT id, text, address, requested_category, place, lat, lon
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
       summary = u.summary,
       hazards = string_to_array(u.hazards, ','),
       language = u.language,
       needs_review = u.needs_review,
       subtype = u.subtype,
       alternatives = u.alternatives::jsonb,
       subtypes = u.subtypes::jsonb,
       place_ref = u.place_ref::jsonb,
       processed_at = now(),
       lease_owner = NULL,
       lease_until = NULL,
       attempts = 0
  FROM unnest($2::uuid[], $3::text[], $4::int2[], $5::text[], $6::text[], $7::text[],
              $8::text[], $9::bool[], $11::text[], $12::text[], $13::text[], $14::text[])
       AS u (id, category, severity, classification, summary, hazards, language, needs_review,
             subtype, alternatives, place_ref, subtypes)
 WHERE r.tenant_id = $1 AND r.id = u.id AND r.lease_owner = $10 AND r.state = 'received'

-- name: count_reports
SELECT count(*) FROM reports WHERE tenant_id = $1

-- name: import_stage_create
-- Typed columns: COPY parses the numbers and times the importer wrote as text. a1..a12
-- hold the values of the format's attribute keys ($2 of import_from_stage), in order.
CREATE TEMP TABLE import_stage (
    line integer, source_id text, text text, lat float8, lon float8, address text,
    address_key text, category text, submitted_at timestamptz, channel text, closed_at timestamptz,
    a1 text, a2 text, a3 text, a4 text, a5 text, a6 text, a7 text, a8 text, a9 text, a10 text,
    a11 text, a12 text,
    -- The record measured as if it had arrived live (imports.measure_one): the SLA policy in
    -- force, its resolution target, and the business time to resolve or the due time.
    sla_policy text, resolution_target_s float8, resolution_business_s float8,
    resolution_due_at timestamptz
) ON COMMIT DROP

-- name: import_source_known
-- Whether the tenant holds records of this source: if not, an import's moves need not look
-- for known records (import_from_stage's $4).
SELECT EXISTS (SELECT 1 FROM reports
                WHERE tenant_id = $1 AND source = $2 AND source_id IS NOT NULL)

-- name: import_from_stage
-- COPY cannot write a table under RLS, so rows land in a temp table first and move over in
-- one statement that the tenant policy checks. $2 names the attribute values a1..aN.
-- An imported record is history with its own identity: it becomes an issue of its own,
-- opened and (when the source says so) closed at its real times, never regrouped. A record
-- that closes before it opens (the importer flags it in its attributes) is kept and closed,
-- but its clock has no start, so no time-to-resolve figure counts it. Its SLA figures come
-- staged (the importer measured it, in Python, as it read it): one write per issue.
-- With $4, known source ids are skipped, each looked up in reports_source_record: under OR
-- the NOT EXISTS stays a per-row probe, whose cost does not grow with the tenant (a hash
-- anti-join would read all the tenant's records for every chunk). Without $4 nothing is
-- looked up; the unique index still refuses a record imported meanwhile (or repeated), and
-- the caller then drops repeats and moves the chunk again with $4.
-- Ids are UUIDv7 made once per statement and counted up by line (the report's 2 x line, its
-- issue's 2 x line + 1): 48 bits of milliseconds, 42 random bits per statement, a 32-bit
-- counter. Unique (two statements in the same millisecond differ in their random bits),
-- time-ordered, and ascending within the chunk; civicpulse_uuid7() per id cost more than a
-- tenth of the move (a strong random number each).
WITH id_prefix AS MATERIALIZED (
    SELECT lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
           || '7' || substr(encode(uuid_send(gen_random_uuid()), 'hex'), 14, 11) AS hex
), fresh AS MATERIALIZED (
    SELECT s.*, (p.hex || lpad(to_hex(s.line::bigint * 2), 8, '0'))::uuid AS report_id,
           (p.hex || lpad(to_hex(s.line::bigint * 2 + 1), 8, '0'))::uuid AS issue_id
      FROM import_stage s, id_prefix p
     WHERE NOT $4::boolean
        OR NOT EXISTS (SELECT 1 FROM reports r
                        WHERE r.tenant_id = $1 AND r.source = $3 AND r.source_id = s.source_id)
), issues_made AS (
    INSERT INTO issues (tenant_id, id, status, category, kind, title, representative_text,
                        lat, lon, cell, report_count, first_reported, last_reported,
                        opened_at, closed_at, sla_started_at, resolved_at, scope, priority,
                        located, address_key, sla_policy, resolution_target_s,
                        resolution_business_s, resolution_due_at)
    SELECT $1, f.issue_id, CASE WHEN f.closed_at IS NULL THEN 'new' ELSE 'closed' END,
           f.category, COALESCE(c.kind, 'other'), left(f.text, 120), f.text, f.lat, f.lon,
           civicpulse_cell(f.lat, f.lon), 1, f.submitted_at, f.submitted_at, f.submitted_at,
           f.closed_at,
           CASE WHEN f.closed_at < f.submitted_at THEN NULL ELSE f.submitted_at END,
           f.closed_at, COALESCE(c.scope, 'local'),
           civicpulse_priority(NULL, 1), (f.lat IS NOT NULL)::int, f.address_key,
           f.sla_policy, f.resolution_target_s, f.resolution_business_s, f.resolution_due_at
      FROM fresh f
      LEFT JOIN categories c ON c.tenant_id = $1 AND c.code = f.category
), moved AS (
INSERT INTO reports (
    tenant_id, id, text, lat, lon, address, requested_category, category, submitted_at,
    channel, attributes, source, source_id, state, processed_at, classification, label_source,
    issue_id, address_key
)
SELECT $1, f.report_id, f.text, f.lat, f.lon, f.address, f.category, f.category,
       f.submitted_at, f.channel,
       jsonb_strip_nulls(jsonb_object(
           $2::text[],
           (ARRAY[f.a1, f.a2, f.a3, f.a4, f.a5, f.a6, f.a7, f.a8, f.a9, f.a10, f.a11,
                  f.a12])
               [1:cardinality($2::text[])])),
       $3, f.source_id,
       'imported', now(), '{"decided_by": "import"}'::jsonb,
       CASE WHEN f.category IS NOT NULL THEN 'import' END, f.issue_id, f.address_key
  FROM fresh f
RETURNING issue_id
)
SELECT m.issue_id, f.sla_policy IS NOT NULL AS measured
  FROM moved m
  JOIN fresh f ON f.issue_id = m.issue_id

-- name: import_stage_unknown
-- The staged records the tenant does not hold yet (reports_source_record, a probe each): a
-- re-import measures only those.
SELECT s.line
  FROM import_stage s
 WHERE NOT EXISTS (SELECT 1 FROM reports r
                    WHERE r.tenant_id = $1 AND r.source = $2 AND r.source_id = s.source_id)

-- name: import_stage_measure
-- Their SLA figures, staged (a temp table: no WAL, nobody else sees it).
UPDATE import_stage s
   SET sla_policy = u.policy, resolution_target_s = u.target,
       resolution_business_s = u.business_s, resolution_due_at = u.due_at
  FROM unnest($1::int[], $2::text[], $3::float8[], $4::float8[], $5::timestamptz[])
       AS u (line, policy, target, business_s, due_at)
 WHERE s.line = u.line

-- name: import_stage_dedupe
-- A record repeated within one chunk: the first line wins.
DELETE FROM import_stage a
 USING import_stage b
 WHERE a.source_id = b.source_id AND a.line > b.line

-- name: list_reports
-- Keyset pagination, newest first: UUIDv7 ids are time-ordered, so the primary key
-- (tenant_id, id) serves both the filter and the order.
SELECT id, state, text, lat, lon, address, requested_category, category, severity,
       classification, issue_id, channel, submitted_at, received_at, processed_at,
       attributes, media_urls, summary, hazards, language, needs_review, place, place_ref,
       subtype, alternatives, failure
  FROM reports
 WHERE tenant_id = $1
   AND ($2::text IS NULL OR state = $2)
   AND ($3::uuid IS NULL OR id < $3)
 ORDER BY id DESC
 LIMIT $4

-- name: review_reports
-- The review queue: reports the classifier was unsure of, newest first, after the report
-- $2 (the page's last), walking reports_needs_review.
SELECT r.id, r.state, r.text, r.lat, r.lon, r.address, r.requested_category, r.category,
       r.severity, r.classification, r.issue_id, r.channel, r.submitted_at, r.received_at,
       r.processed_at, r.attributes, r.media_urls, r.summary, r.hazards, r.language,
       r.needs_review, r.place, r.place_ref, r.subtype, r.alternatives, r.failure
  FROM reports r
 WHERE r.tenant_id = $1 AND r.needs_review
   AND ($2::uuid IS NULL
        OR (r.received_at, r.id) < (SELECT c.received_at, c.id FROM reports c
                                     WHERE c.tenant_id = $1 AND c.id = $2))
 ORDER BY r.received_at DESC, r.id DESC
 LIMIT $3

-- name: correct_report
-- A staff correction: the staff's category and severity become the report's and a training
-- label. A new category drops the classifier's subtype and mixes, which were about the old
-- one: grouping then sees the staff's category alone. Returns the values before the change
-- for the event log.
UPDATE reports r
   SET category = COALESCE($3, r.category),
       severity = COALESCE($4, r.severity),
       label_source = CASE WHEN $3::text IS NOT NULL THEN 'staff' ELSE r.label_source END,
       needs_review = false,
       subtype = CASE WHEN $3::text IS DISTINCT FROM before.category AND $3::text IS NOT NULL
                      THEN NULL ELSE r.subtype END,
       subtypes = CASE WHEN $3::text IS DISTINCT FROM before.category AND $3::text IS NOT NULL
                       THEN NULL ELSE r.subtypes END,
       alternatives = CASE WHEN $3::text IS DISTINCT FROM before.category
                                AND $3::text IS NOT NULL
                           THEN jsonb_build_array(jsonb_build_array($3::text, 1.0))
                           ELSE r.alternatives END,
       classification = COALESCE(r.classification, '{}'::jsonb)
                        || jsonb_build_object('decided_by', 'staff', 'model', NULL,
                                              'confidence', 1.0, 'corrected_by', $5::text)
  FROM (SELECT category, severity FROM reports
         WHERE tenant_id = $1 AND id = $2 FOR UPDATE) AS before
 WHERE r.tenant_id = $1 AND r.id = $2
RETURNING before.category AS old_category, before.severity AS old_severity, r.issue_id

-- name: append_event
INSERT INTO issue_events (tenant_id, issue_id, report_id, kind, actor, from_status, to_status,
                          note, data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
RETURNING id, created_at

-- name: report_events
SELECT id, kind, actor, from_status, to_status, note, data, created_at
  FROM issue_events
 WHERE tenant_id = $1 AND report_id = $2
 ORDER BY id

-- name: deferred_commit
-- For the rest of this transaction: commit without waiting for the WAL to reach the disk.
-- Only for work that is redone when lost: a classification lost in a server crash leaves its
-- report 'received', and it is classified again once its lease runs out. (Intake and
-- grouping, whose events streams may already have shown, always wait for the disk.)
SELECT set_config('synchronous_commit', 'off', true)
