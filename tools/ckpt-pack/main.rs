//! ckpt-pack: placeholder.
fn main() {}
