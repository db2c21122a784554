//! Read models fed by catch-up subscriptions to the log (see docs/ARCHITECTURE.md).
