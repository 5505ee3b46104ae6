//! Whatever arrives on the queue: decoding must refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = inlet::envelope::Envelope::from_json(text);
    }
});
