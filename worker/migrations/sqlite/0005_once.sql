-- Packages that must be enqueued at most once (a QSchedule's slots): a
-- marker per key, refused a second time until it expires. Microseconds since
-- the Unix epoch.
CREATE TABLE q8s_once (
    queue    TEXT   NOT NULL,
    once_key TEXT   NOT NULL,
    expires  BIGINT NOT NULL,
    PRIMARY KEY (queue, once_key)
);
