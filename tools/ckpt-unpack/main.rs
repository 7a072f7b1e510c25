//! ckpt-unpack: placeholder.
fn main() {}
