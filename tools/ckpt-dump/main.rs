//! ckpt-dump: placeholder.
fn main() {}
