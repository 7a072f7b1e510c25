//! The whole input is a stream: open it and unpack it into a fresh staging dir inside a watched
//! sandbox, as ckpt-unpack does. Any panic, and any file created or changed outside the staging
//! dir, is a finding; refusing the stream with an error is the expected outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ckpt_fuzz::unpack_checked(data);
});
