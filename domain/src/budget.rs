//! What LLM calls may spend: a mission's own budget (given at enqueue), and daily budgets of a
//! whole deployment or of one agent kind (in the LLM configuration). The gateway reserves each
//! call's worst case against every budget that applies before the call is sent.

use serde::{Deserialize, Serialize};

/// Most tokens one budget may name.
pub const TOKENS_MAX: u64 = 1_000_000_000_000;
/// Most US dollars one budget may name.
pub const COST_USD_MAX: f64 = 1_000_000.0;

/// A ceiling on tokens (input and output together), on cost, or on both. A field left out
/// sets no ceiling.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd_max: Option<f64>,
}

/// Which field of a budget breaks its rules, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadBudget {
    /// `tokens_max` or `cost_usd_max`.
    pub field: &'static str,
    pub reason: String,
}

impl Budget {
    pub fn check(&self) -> Result<(), BadBudget> {
        if let Some(tokens) = self.tokens_max
            && !(1..=TOKENS_MAX).contains(&tokens)
        {
            return Err(BadBudget { field: "tokens_max", reason: format!("1 to {TOKENS_MAX}") });
        }
        if let Some(cost) = self.cost_usd_max
            && !(cost.is_finite() && cost > 0.0 && cost <= COST_USD_MAX)
        {
            return Err(BadBudget {
                field: "cost_usd_max",
                reason: format!("a number above 0, at most {COST_USD_MAX}"),
            });
        }
        Ok(())
    }

    /// Sets no ceiling at all.
    pub fn is_empty(&self) -> bool {
        self.tokens_max.is_none() && self.cost_usd_max.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_names_its_bad_field() {
        let bad = |budget: Budget| budget.check().unwrap_err().field;
        assert_eq!(bad(Budget { tokens_max: Some(0), cost_usd_max: None }), "tokens_max");
        assert_eq!(bad(Budget { tokens_max: None, cost_usd_max: Some(-1.0) }), "cost_usd_max");
        assert_eq!(bad(Budget { tokens_max: None, cost_usd_max: Some(f64::NAN) }), "cost_usd_max");
        assert!(Budget { tokens_max: Some(10), cost_usd_max: Some(0.5) }.check().is_ok());
        assert!(Budget::default().is_empty());
    }
}
