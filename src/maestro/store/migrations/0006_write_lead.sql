-- The replica that checks and writes the changes other replicas forward to it (write_lead.py):
-- whichever holds the schema's lead lock writes here where it listens for them, the machine it
-- runs on (replicas forward by default only to a lead on their own machine), and the secret
-- they prove they know (an HMAC of its challenge) before it runs any.
CREATE TABLE maestro_write_lead (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    replica_id text NOT NULL,
    address text NOT NULL,
    host text NOT NULL DEFAULT '',
    secret text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
