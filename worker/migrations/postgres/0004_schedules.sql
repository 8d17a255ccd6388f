-- Schedules: the seed's Schedule model, plus cron, a time zone, an anchor
-- (the first run, which calendar kinds keep the day and time of) and pausing.
-- Times are microseconds since the Unix epoch.
CREATE TABLE q8s_schedules (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT UNIQUE,
    func          TEXT    NOT NULL,
    hook          TEXT,
    args          TEXT    NOT NULL,
    kwargs        TEXT    NOT NULL,
    schedule_type TEXT    NOT NULL,
    minutes       BIGINT,
    cron          TEXT,
    tz            TEXT    NOT NULL,
    repeats       BIGINT  NOT NULL,
    anchor        BIGINT  NOT NULL,
    next_run      BIGINT  NOT NULL,
    last_run      BIGINT,
    task          TEXT,
    q_options     TEXT    NOT NULL,
    paused        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX q8s_schedules_due ON q8s_schedules (next_run);
