//! Placeholder: lxc-fixtty.
