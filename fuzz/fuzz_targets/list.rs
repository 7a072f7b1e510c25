//! The whole input is a stream: read every entry and its data without writing anything, as
//! `ckpt-unpack --list` does (fast: the reader, the pax, sparse and trailer checks, zstd), once from
//! memory and once through short reads of varying size; both must end the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ckpt_fuzz::list(data);
});
