#![no_main]
//! See src/fuzzing.rs: the harness is shared with the regression test that replays saved inputs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meshgate::fuzzing::protect_batch(data));
