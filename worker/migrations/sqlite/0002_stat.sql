-- Each live cluster's Stat, as JSON, published every few seconds; rows past
-- their expiry belong to clusters that are gone.
CREATE TABLE q8s_stat (
    cluster_key TEXT    PRIMARY KEY,
    cluster_id  TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    expires     INTEGER NOT NULL
);
