-- Read model of the `llm_usage` projector: one row per recorded LLM call, for usage reports
-- (`GET /api/llm/usage`) and for seeding the budgets' counters. Rebuilt from the log like
-- every read model.
CREATE TABLE llm_calls (
    position       bigint           PRIMARY KEY,
    at             timestamptz      NOT NULL,
    mission_id     text,
    kind           text             NOT NULL,
    route          text             NOT NULL,
    provider       text             NOT NULL,
    model          text             NOT NULL,
    input_tokens   bigint           NOT NULL,
    output_tokens  bigint           NOT NULL,
    cost_usd       double precision NOT NULL,
    latency_ms     bigint           NOT NULL,
    outcome        text             NOT NULL
);
CREATE INDEX llm_calls_at ON llm_calls (at);
CREATE INDEX llm_calls_mission ON llm_calls (mission_id) WHERE mission_id IS NOT NULL;
