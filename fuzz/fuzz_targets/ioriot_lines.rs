//! ioriot's text formats through their public parsers. Byte 0 picks the
//! parser, the rest is the text: a `.capture` event line
//! (`capture_format::parse_line`) or a whole `.replay` file
//! (`replay_format::read`). What parses writes back (`write_event`,
//! `replay_format::write`) to text that parses to the same value. Kept
//! small on purpose: the formats are being reworked, and this is the one
//! place to re-point.
#![no_main]

use ioriot::{capture_format, replay_format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        for line in text.lines() {
            if let Ok(Some(event)) = capture_format::parse_line(line) {
                let mut out = Vec::new();
                capture_format::write_event(&mut out, &event).unwrap();
                let written = String::from_utf8(out).expect("events are written as UTF-8");
                let again = capture_format::parse_line(written.trim_end_matches('\n'))
                    .unwrap_or_else(|e| panic!("{written:?} does not parse back: {e}"));
                assert_eq!(again, Some(event), "{line:?} -> {written:?}");
            }
        }
    } else if let Ok(replay) = replay_format::read(rest) {
        let mut out = Vec::new();
        replay_format::write(&mut out, &replay).unwrap();
        let again = replay_format::read(&out[..]).unwrap_or_else(|e| {
            panic!(
                "{:?} does not read back: {e}",
                String::from_utf8_lossy(&out)
            )
        });
        assert_eq!(again, replay, "{:?}", String::from_utf8_lossy(&out));
    }
});
