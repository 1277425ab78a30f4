-- The codes of an incident's reminders (from incidents.triaged): a `reminder_done` action must name one of them.
-- NULL until triage has decided them.
ALTER TABLE incidents ADD COLUMN reminder_codes text[];
