//! Retention policies and the 30-day, 90-day and 7-year sweeps.
