-- What a batch reads before it appends, in one round trip: the schools' advisory locks first, then (in a
-- statement of its own, which in READ COMMITTED sees what was committed when it began, so what the last
-- holder of a lock committed) which event ids the log already holds, each school's head, and the live
-- projection rows of the batch's incidents, locked for the caller's transaction. A VOLATILE function runs
-- each statement with a new snapshot; the caller's transaction holds the locks to its end, as before.
-- Rows: (0, event id) stored; (1, school, seq, hash) a head, seq NULL for an empty chain;
-- (2, incident, school, state) a projection row.
CREATE FUNCTION audit_lock_and_read(schools text[], event_ids text[], incidents text[])
RETURNS TABLE (r_kind int, r_key text, r_seq bigint, r_hash bytea, r_school text, r_state text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(k)
       FROM (SELECT DISTINCT hashtext('audit:' || s) AS k FROM unnest(schools) AS s) AS keys ORDER BY k;
    RETURN QUERY
        WITH p AS (
            SELECT ip.incident_id, ip.school_id, ip.state FROM incident_projection ip
             WHERE ip.incident_id = ANY(incidents) ORDER BY ip.incident_id FOR UPDATE
        )
        SELECT 0, a.event_id, NULL::bigint, NULL::bytea, NULL::text, NULL::text
          FROM audit_records a WHERE a.event_id = ANY(event_ids)
        UNION ALL
        SELECT 1, s.school_id, h.seq, h.hash, NULL::text, NULL::text
          FROM unnest(schools) AS s(school_id) LEFT JOIN LATERAL
               (SELECT r.seq, r.hash FROM audit_records r WHERE r.school_id = s.school_id
                 ORDER BY r.seq DESC LIMIT 1) h ON true
        UNION ALL
        SELECT 2, p.incident_id, NULL::bigint, NULL::bytea, p.school_id, p.state::text FROM p;
END;
$$;

REVOKE ALL ON FUNCTION audit_lock_and_read(text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_lock_and_read(text[], text[], text[]) TO @app_role@;
