-- Keep event values in the outbox row, uncompressed. Rows over about 2 KB (triaged events, most requested
-- ones) were compressed with pglz on insert (this PostgreSQL has no lz4) and moved to the TOAST table, for
-- a row that lives one publishing pass. In the row, 10 x 1,000 values of 2.2 KB cost 7-11 us each to insert and
-- 20 us to read and mark published, against 30-45 us and 11-13 us compressed. Values over 8 KB are still toasted.
ALTER TABLE outbox SET (toast_tuple_target = 8160);
