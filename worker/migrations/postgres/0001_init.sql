-- Finished tasks: the seed's Task model. Times are microseconds since the Unix epoch.
CREATE TABLE q8s_tasks (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    name       TEXT    NOT NULL,
    func       TEXT    NOT NULL,
    hook       TEXT,
    args       TEXT    NOT NULL,
    kwargs     TEXT    NOT NULL,
    result     TEXT    NOT NULL,
    error_kind TEXT,
    task_group TEXT,
    enqueued   BIGINT  NOT NULL,
    started    BIGINT  NOT NULL,
    stopped    BIGINT  NOT NULL,
    success    BOOLEAN NOT NULL,
    attempts   BIGINT  NOT NULL
);
CREATE INDEX q8s_tasks_name ON q8s_tasks (name);
CREATE INDEX q8s_tasks_group ON q8s_tasks (task_group, success);
CREATE INDEX q8s_tasks_success_seq ON q8s_tasks (success, seq);
CREATE INDEX q8s_tasks_stopped ON q8s_tasks (stopped);

-- The SQL broker's queue: one row per package until it is acknowledged.
-- locked_until is 0 for a package waiting, else the receipt's deadline.
CREATE TABLE q8s_queue (
    id           BIGSERIAL PRIMARY KEY,
    queue        TEXT    NOT NULL,
    payload      BYTEA   NOT NULL,
    timeout_secs BIGINT,
    enqueued_at  BIGINT  NOT NULL,
    locked_until BIGINT  NOT NULL DEFAULT 0,
    deliveries   BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX q8s_queue_ready ON q8s_queue (queue, locked_until, id);
