//! What the benches compute over their samples.

/// The `q` quantile (0 to 1) of latencies in microseconds sorted ascending, in
/// milliseconds: the sample at the rounded rank (0 when there is none).
pub(crate) fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    sorted_us[i] as f64 / 1000.0
}
