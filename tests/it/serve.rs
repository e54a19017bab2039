//! `brain serve` as users run it.
