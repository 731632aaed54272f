-- Which process is dispatching a delivery, so that it can take its own
-- deliveries back at once after a restart instead of waiting out the lease.
ALTER TABLE deliveries ADD COLUMN dispatcher TEXT;
