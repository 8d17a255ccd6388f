-- Each enqueue_once removes its queue's expired markers: by an index, not a
-- scan of a day's markers.
CREATE INDEX q8s_once_expiry ON q8s_once (queue, expires);
