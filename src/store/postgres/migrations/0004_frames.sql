-- Live resume across replicas (SPEC §6): the numbered frames of requests running somewhere,
-- as their clients were sent them, so that a `resume` reaching another replica follows the
-- request live. Writers `NOTIFY frames` after each insert; followers `LISTEN`. A row with an
-- empty frame ends a request whose process is gone: its end is in `events`.
CREATE TABLE frames (
    "user"     text NOT NULL,
    request_id text NOT NULL,
    seq        bigint NOT NULL,
    frame      text NOT NULL,
    terminal   boolean NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY ("user", request_id, seq)
);
CREATE INDEX frames_ended ON frames (written_at) WHERE terminal;
