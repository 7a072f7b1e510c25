//! ckpt-restore: placeholder.
fn main() {}
