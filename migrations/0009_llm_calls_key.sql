-- The API key a call outside any mission was made with (`LlmCalled`'s `by`), so that a key's
-- budgets are seeded from the log like the others. NULL for a mission's call.
ALTER TABLE llm_calls ADD COLUMN key_id text;
CREATE INDEX llm_calls_key ON llm_calls (key_id, at) WHERE key_id IS NOT NULL;
