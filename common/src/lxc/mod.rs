//! Placeholder: LXC wrappers.
