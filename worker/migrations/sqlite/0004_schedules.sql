-- Schedules: the seed's Schedule model, plus cron, a time zone, an anchor
-- (the first run, which calendar kinds keep the day and time of) and pausing.
-- Times are microseconds since the Unix epoch.
CREATE TABLE q8s_schedules (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT UNIQUE,
    func          TEXT    NOT NULL,
    hook          TEXT,
    args          TEXT    NOT NULL,
    kwargs        TEXT    NOT NULL,
    schedule_type TEXT    NOT NULL,
    minutes       INTEGER,
    cron          TEXT,
    tz            TEXT    NOT NULL,
    repeats       INTEGER  NOT NULL,
    anchor        INTEGER  NOT NULL,
    next_run      INTEGER  NOT NULL,
    last_run      INTEGER,
    task          TEXT,
    q_options     TEXT    NOT NULL,
    paused        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX q8s_schedules_due ON q8s_schedules (next_run);
