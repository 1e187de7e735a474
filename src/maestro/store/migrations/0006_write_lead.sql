-- The replica that checks and writes every change for the others (write_lead.py): whichever
-- holds the schema's lead lock writes here where it listens for the changes the other replicas
-- forward, and the secret they prove they know (an HMAC of its challenge) before it runs any.
CREATE TABLE maestro_write_lead (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    replica_id text NOT NULL,
    address text NOT NULL,
    secret text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
