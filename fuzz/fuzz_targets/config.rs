//! Config documents (TOML and JSON): validation must name a field, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for hint in [Some("toml"), Some("json")] {
        if let Ok(doc) = inlet::config::ConfigDoc::parse(text, hint) {
            let _ = inlet::config::validate(doc, std::path::PathBuf::from("."), &|_: &str| {
                Some("fuzz-secret".to_string())
            });
        }
    }
});
