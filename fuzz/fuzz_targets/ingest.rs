#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_codecs::fuzzing::ingest(data));
