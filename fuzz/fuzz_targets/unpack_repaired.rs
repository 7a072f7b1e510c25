//! Like `unpack`, but the input is first repaired (header checksums recomputed, the trailer's
//! count and digest made to match), so that mutated header fields (types, paths, link targets,
//! modes, sizes, pax records) reach the extractor and the directory pass at the end instead of
//! stopping at a checksum. Replay a finding with CKPT_FUZZ_DUMP=FILE to get the stream it ran.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stream = ckpt_fuzz::repair(data);
    ckpt_fuzz::dump(&stream);
    let _ = ckpt_fuzz::unpack_checked(&stream);
});
