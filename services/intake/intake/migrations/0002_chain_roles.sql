-- The roles an incident's escalation chain tells (from incidents.triaged, normalised): the people who may
-- acknowledge it and record its actions. NULL until triage has decided the chain.
ALTER TABLE incidents ADD COLUMN chain_roles text[];
