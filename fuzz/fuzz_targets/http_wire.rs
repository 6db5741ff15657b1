#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reset_gateway::fuzzing::http_wire(data));
