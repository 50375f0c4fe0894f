-- Identity (SPEC §8): every row names its user, request ids are unique per user, and the
-- reads a turn makes are by user. 0001 already keys claims by ("user", request_id) and
-- conversations by (conversation_id, seq); this adds what the per-user reads need.

-- The model tokens of a row's `usage`, so the daily budget is a sum over an index instead of
-- parsing every line of the day. Rows written before this migration are filled from their line.
ALTER TABLE events ADD COLUMN tokens bigint NOT NULL DEFAULT 0;
UPDATE events SET tokens = (line::jsonb -> 'usage' ->> 'total_tokens')::bigint
    WHERE line::jsonb -> 'usage' ->> 'total_tokens' IS NOT NULL;
UPDATE events SET "user" = line::jsonb ->> 'user' WHERE line::jsonb ->> 'user' IS NOT NULL;
CREATE INDEX events_user_day ON events ("user", (left(timestamp, 10))) INCLUDE (tokens);

-- A conversation belongs to the user of its first row: the list of a user's conversations.
CREATE INDEX events_conversation_owner ON events ("user", conversation_id) WHERE seq = 1;

-- A request's rows are read by (user, request_id).
DROP INDEX events_request;
CREATE INDEX events_request ON events ("user", request_id, position) WHERE request_id IS NOT NULL;
