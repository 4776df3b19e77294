//! The blocking TCP client (mug for Rust). Under construction.
