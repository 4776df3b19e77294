//! Settings from the environment and the median of repetitions, shared by
//! the benchmarks (included with `#[path]`, as `histogram.rs` is).

#![allow(dead_code)] // each benchmark uses its own share

use std::error::Error;
use std::str::FromStr;

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// A value from the environment, or `default` when unset.
pub fn env_or<T: FromStr>(name: &str, default: T) -> BoxResult<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {v:?}").into()),
        Err(_) => Ok(default),
    }
}

/// A switch from the environment: `0` is off, `1` is on; on when unset.
pub fn env_flag(name: &str) -> BoxResult<bool> {
    match env_or::<u8>(name, 1)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(format!("{name}: 0 or 1").into()),
    }
}

/// A comma-separated list from the environment, or `default`.
pub fn env_list<T: FromStr>(name: &str, default: &str) -> BoxResult<Vec<T>> {
    let list = std::env::var(name).unwrap_or_else(|_| default.to_string());
    list.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            item.trim()
                .parse()
                .map_err(|_| format!("{name}: cannot parse {item:?}").into())
        })
        .collect()
}

/// The median (the mean of the middle two for an even count; NaN for
/// none).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
