-- The delivery loop asks, of an acknowledged incident's notice, whether whoever acknowledged is someone the
-- chain told (a delivery of the incident to that role): by incident, not by scanning every delivery.
CREATE INDEX deliveries_by_incident ON deliveries (incident_id);
