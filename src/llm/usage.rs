//! PostgreSQL adapter of the `llm_usage` projector (table `llm_calls`).

use projections::llm_usage::CallRow;
use sqlx::{AssertSqlSafe, PgConnection};

use crate::eventlog::projectors::PgWriter;

#[derive(Debug, Default, Clone, Copy)]
pub struct LlmUsageWriter;

impl PgWriter<CallRow> for LlmUsageWriter {
    fn tables(&self) -> &'static [&'static str] {
        &["llm_calls"]
    }

    async fn write(
        &self,
        connection: &mut PgConnection,
        suffix: &str,
        changes: Vec<CallRow>,
    ) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut position = Vec::with_capacity(changes.len());
        let (mut at, mut mission_id, mut kind, mut route) = (vec![], vec![], vec![], vec![]);
        let (mut provider, mut model, mut input, mut output) = (vec![], vec![], vec![], vec![]);
        let (mut cost, mut latency, mut outcome, mut key_id) = (vec![], vec![], vec![], vec![]);
        for row in changes {
            position.push(row.position as i64);
            at.push(row.at);
            mission_id.push(row.mission_id);
            kind.push(row.call.kind);
            route.push(row.call.route);
            provider.push(row.call.provider);
            model.push(row.call.model);
            input.push(row.call.input_tokens as i64);
            output.push(row.call.output_tokens as i64);
            cost.push(row.call.cost_usd);
            latency.push(row.call.latency_ms as i64);
            outcome.push(row.call.outcome);
            key_id.push(row.key_id);
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO llm_calls{suffix} (position, at, mission_id, kind, route, provider, model,
                 input_tokens, output_tokens, cost_usd, latency_ms, outcome, key_id)
             SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[],
                 $5::text[], $6::text[], $7::text[], $8::int8[], $9::int8[], $10::float8[],
                 $11::int8[], $12::text[], $13::text[])
             ON CONFLICT (position) DO NOTHING"
        )))
        .bind(&position)
        .bind(&at)
        .bind(&mission_id)
        .bind(&kind)
        .bind(&route)
        .bind(&provider)
        .bind(&model)
        .bind(&input)
        .bind(&output)
        .bind(&cost)
        .bind(&latency)
        .bind(&outcome)
        .bind(&key_id)
        .execute(connection)
        .await?;
        Ok(())
    }
}
