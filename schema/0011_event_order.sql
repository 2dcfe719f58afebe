-- Live streams in commit order: every tenant's events get a per-tenant sequence number
-- (issue_events.seq) taken from a counter row that stays locked until the writing
-- transaction ends. A transaction that logs an event for a tenant therefore waits for the
-- tenant's previous event-writing transaction to commit, so seq order is commit order and
-- the events a reader can see are always a prefix of the sequence: a stream that reads
-- `seq > last sent` can never skip one that commits later with a smaller number (as it could
-- with the global identity, taken before commit). Sequences are per tenant, so a public
-- stream's ids reveal nothing about other tenants. A rolled-back transaction gives its
-- numbers back; an insert skipped by ON CONFLICT leaves a gap, which readers do not mind.

CREATE TABLE tenant_event_counters (
    tenant_id  bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    last_seq   bigint NOT NULL
);
-- Only the two functions below (running as the owner) touch it: no grants to the app role.
ALTER TABLE tenant_event_counters ENABLE ROW LEVEL SECURITY;

INSERT INTO tenant_event_counters (tenant_id, last_seq)
SELECT t.id, 0 FROM tenants t;

ALTER TABLE issue_events ADD COLUMN seq bigint;
WITH numbered AS (
    SELECT tenant_id, id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS seq
      FROM issue_events
)
UPDATE issue_events e
   SET seq = n.seq
  FROM numbered n
 WHERE e.tenant_id = n.tenant_id AND e.id = n.id;
UPDATE tenant_event_counters c
   SET last_seq = m.last_seq
  FROM (SELECT tenant_id, max(seq) AS last_seq FROM issue_events GROUP BY tenant_id) AS m
 WHERE c.tenant_id = m.tenant_id;
ALTER TABLE issue_events ALTER COLUMN seq SET NOT NULL;
-- Serves the streams: a tenant's events after a number, in order (fan-out, resume and
-- catch-up of a slow subscriber), and the newest number when a stream starts.
CREATE UNIQUE INDEX issue_events_seq ON issue_events (tenant_id, seq);

-- Numbers each new event. The counter row is created with the tenant (below), so the
-- UPDATE finds it; the INSERT covers a tenant made before a restore or by hand.
CREATE FUNCTION civicpulse_number_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    UPDATE tenant_event_counters c
       SET last_seq = c.last_seq + 1
     WHERE c.tenant_id = NEW.tenant_id
    RETURNING c.last_seq INTO NEW.seq;
    IF NOT FOUND THEN
        INSERT INTO tenant_event_counters AS c (tenant_id, last_seq)
        VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET last_seq = c.last_seq + 1
        RETURNING c.last_seq INTO NEW.seq;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER issue_events_number BEFORE INSERT ON issue_events
    FOR EACH ROW EXECUTE FUNCTION civicpulse_number_event();

CREATE FUNCTION civicpulse_tenant_event_counter() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO tenant_event_counters (tenant_id, last_seq) VALUES (NEW.id, 0)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_event_counter AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION civicpulse_tenant_event_counter();

-- One notification per tenant per statement, not per event: the stream reads everything
-- after its last number anyway, and PostgreSQL folds equal payloads of one transaction into
-- one delivery, so a grouping batch of 200 events wakes each process once.
CREATE OR REPLACE FUNCTION civicpulse_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('civicpulse_events', json_build_object('t', e.tenant_id)::text)
       FROM (SELECT DISTINCT tenant_id FROM new_rows) AS e;
    RETURN NULL;
END
$$;

-- Firing timers logs events for several tenants in one statement. Lock order is what keeps
-- that deadlock-free: every other writer takes its tenant's counter after its issue and
-- timer rows (grouping logs its events after updating its issues and before moving their
-- timers, which is only safe if the timer firing does not hold timer rows while it waits
-- for a counter). So the firing takes the counters of the tenants with due timers first,
-- in tenant order, and only then claims the timers.
CREATE OR REPLACE FUNCTION civicpulse_fire_sla_timers(p_actor text, p_limit integer)
RETURNS TABLE (tenant_id bigint, issue_id uuid, kind text, target text, cycle integer,
               fire_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    PERFORM 1
       FROM tenant_event_counters c
      WHERE c.tenant_id IN (SELECT d.tenant_id FROM sla_timers d
                             WHERE d.fired_at IS NULL AND d.fire_at <= now())
      ORDER BY c.tenant_id
        FOR UPDATE OF c;
    RETURN QUERY
    WITH due AS (
        SELECT t.tenant_id, t.issue_id, t.cycle, t.target, t.kind
          FROM sla_timers t
         WHERE t.fired_at IS NULL AND t.fire_at <= now()
         ORDER BY t.fire_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), fired AS (
        UPDATE sla_timers t
           SET fired_at = now()
          FROM due
         WHERE t.tenant_id = due.tenant_id AND t.issue_id = due.issue_id
           AND t.cycle = due.cycle AND t.target = due.target AND t.kind = due.kind
        RETURNING t.tenant_id, t.issue_id, t.kind, t.target, t.cycle, t.fire_at
    ), logged AS (
        INSERT INTO issue_events (tenant_id, issue_id, kind, actor, data)
        SELECT f.tenant_id, f.issue_id,
               CASE f.kind WHEN 'warning' THEN 'sla_warning' ELSE 'sla_breached' END, p_actor,
               jsonb_build_object('target', f.target, 'cycle', f.cycle::text,
                                  'due', f.fire_at)
          FROM fired f
         ORDER BY f.tenant_id
        ON CONFLICT DO NOTHING
    )
    SELECT f.tenant_id, f.issue_id, f.kind, f.target, f.cycle, f.fire_at FROM fired f;
END
$$;
