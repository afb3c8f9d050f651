//! `halyard-fuzz-afl TARGET`: runs one of `halyard_fuzz::TARGETS` under AFL++ (persistent
//! mode, input on stdin). Built by `scripts/fuzz.sh` with `cargo afl build`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = halyard_fuzz::target(&name) else {
        let names: Vec<&str> = halyard_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: halyard-fuzz-afl TARGET  (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
