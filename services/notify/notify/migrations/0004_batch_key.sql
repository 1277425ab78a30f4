-- The message a notice last went out in, when that message carried several (a digest): its retries and fallbacks
-- go out together again, as one message with the same id, not one message each under new ids.
ALTER TABLE deliveries ADD COLUMN batch_key text;
