//! The configuration loader on arbitrary text. Besides not panicking: an
//! error names a position inside the text (line 1.. up to one past the last
//! line, column 1..), errors come sorted by position, loading is
//! deterministic, and a configuration that loads also builds an engine that
//! takes a frame.

use ftpgate::config;
use ftpgate::engine::{Engine, Sink};
use ftpgate::event::Event;
use ftpgate::time::Nanos;

struct Null;
impl Sink for Null {
    fn transmit(&mut self, _: usize, _: &[u8]) {}
    fn event(&mut self, _: Event) {}
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let got = config::from_str(text, "fuzz.yaml");
    assert_eq!(got, config::from_str(text, "fuzz.yaml"), "loading is deterministic");
    match got {
        Ok(cfg) => {
            let n_if = cfg.interfaces.len();
            let mut e = Engine::new(cfg, 1);
            if n_if > 0 {
                let mut f = crate::lab::tcp(
                    crate::lab::CLIENT_MAC,
                    crate::lab::GW_IN_MAC,
                    (crate::lab::ip("192.0.2.10"), 40000),
                    (crate::lab::ip("198.51.100.20"), 21),
                    1,
                    0,
                    crate::lab::flags::SYN,
                    b"",
                );
                e.process(Nanos(1), 1, 0, &mut f, &mut Null);
                e.tick(Nanos(1_000_000_000_000), &mut Null);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result names at least one problem");
            // YAML line breaks: LF, CRLF, and a bare CR.
            let bytes = text.as_bytes();
            let bare_cr =
                bytes.iter().enumerate().filter(|&(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n')).count();
            let lines = text.split('\n').count() + bare_cr;
            for e in &errors {
                assert!(e.line >= 1 && e.line <= lines + 1, "error line {} outside 1..={}: {e}", e.line, lines + 1);
                assert!(e.column >= 1, "error column {}: {e}", e.column);
                assert!(!e.message.is_empty());
                assert_eq!(e.file, "fuzz.yaml");
            }
            assert!(
                errors.windows(2).all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
                "errors sorted by position"
            );
        }
    }
}
