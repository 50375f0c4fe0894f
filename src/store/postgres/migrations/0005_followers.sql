-- Live resume across replicas on demand: a process shares a request's frames only once a
-- process on another host follows it. A follower registers here, under a key-share lock on
-- the request's lease, and notifies `followers`; the owner reads this table again when the
-- request ends (its end deletes the lease, which waits for that lock), so a follower that
-- registered in time is always seen and one that came later finds the stored end instead.
CREATE TABLE followers (
    "user"     text NOT NULL,
    request_id text NOT NULL,
    PRIMARY KEY ("user", request_id)
);
