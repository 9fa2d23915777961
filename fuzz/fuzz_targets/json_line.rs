#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_pipelines::fuzzing::json_line(data));
