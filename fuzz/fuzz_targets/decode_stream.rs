//! Fuzzes `kv_codec::format::decode_stream` with arbitrary bytes: it must return a stream or
//! a typed error, never panic, and never allocate for more vectors than the bytes can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((header, values)) = kv_codec::format::decode_stream(bytes) {
        assert_eq!(values.len() % header.config.head_dim, 0);
    }
});
