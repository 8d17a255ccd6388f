-- Dequeue walks the queue in id order and skips the few rows in flight;
-- an index led by locked_until made every dequeue sort all waiting rows.
DROP INDEX q8s_queue_ready;
CREATE INDEX q8s_queue_order ON q8s_queue (queue, id);
