-- Requests running somewhere: the claim's owner process renews the lease while it works;
-- a lease that runs out means the owner is gone, and another process finishes the request
-- with a terminal error instead of leaving it claimed for ever.
CREATE TABLE leases (
    "user"          text NOT NULL DEFAULT 'anonymous',
    request_id      text NOT NULL,
    conversation_id text NOT NULL,
    owner           text NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY ("user", request_id)
);
CREATE INDEX leases_owner ON leases (owner);
CREATE INDEX leases_expires_at ON leases (expires_at);
