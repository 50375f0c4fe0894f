-- The events of SPEC §6: each row keeps its exact line, so export and `replay --verify`
-- see the bytes that were hashed. `position` is the line number of the one chain.
CREATE TABLE events (
    position        bigint PRIMARY KEY,
    id              text NOT NULL UNIQUE,
    conversation_id text NOT NULL,
    seq             bigint NOT NULL,
    request_id      text,
    "user"          text NOT NULL DEFAULT 'anonymous',
    kind            text NOT NULL,
    timestamp       text NOT NULL,
    line            text NOT NULL,
    prev            text NOT NULL,
    hash            text NOT NULL,
    CONSTRAINT events_conversation_seq UNIQUE (conversation_id, seq)
);

-- A request_id is claimed by its user_message, once per user.
CREATE UNIQUE INDEX events_claims ON events ("user", request_id)
    WHERE kind = 'user_message' AND request_id IS NOT NULL;
CREATE INDEX events_request ON events (request_id, position) WHERE request_id IS NOT NULL;

-- The end of the chain. Appenders lock this single row, which orders every append of every
-- process sharing the database.
CREATE TABLE chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint NOT NULL,
    hash      text NOT NULL
);
INSERT INTO chain_head (position, hash)
    VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');
