//! lxc-fixtty: placeholder.
fn main() {}
