//! cargo-fuzz target: see `fuzz/src/harness.rs` for what it runs and checks.
#![no_main]

#[allow(dead_code)] // each target uses one entry point
#[path = "../src/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::dicom_to_sample(data);
});
