//! Fuzzes the upstream-answer parser (`UpstreamAnswer::parse`, what reads the bytes upstream
//! resolvers send back): any bytes must not panic, and an answer it accepts must make a
//! response that hickory-proto decodes, with the client's ID and question, within the client's
//! limit (`exercise_upstream_answer` says what it checks; a unit test runs it over a corpus).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lodestar_dns::forward::exercise_upstream_answer(data);
});
