//! House rules that a program checks, over every `.rs` file of the workspace:
//! - each file opens with a `//!` paragraph that says what it is for;
//! - no function is longer than [`MAX_FN_LINES`] lines, except those listed in
//!   [`LONG_FUNCTIONS`] with the length they had when the rule came in — a ratchet: they may
//!   shrink (then lower their entry), never grow, and no new one may join them.
//!
//! Function length is measured as rustfmt lays code out: from the `fn` line to the first
//! line after it that closes a brace at the same indentation.

use std::path::{Path, PathBuf};

/// The longest a function may be.
const MAX_FN_LINES: usize = 150;

/// Functions longer than [`MAX_FN_LINES`] when the rule came in: (file, function, lines at
/// most). Split them when you work on them, and lower or remove their entry.
const LONG_FUNCTIONS: &[(&str, &str, usize)] = &[
    ("access/src/imap/fetch.rs", "fetch", 268),
    ("directory/examples/lookup_bench.rs", "main", 170),
    ("fencing/src/controller.rs", "run", 172),
    ("jepsen/src/append.rs", "check", 278),
    ("jepsen/src/linearizable.rs", "search", 190),
    ("lab/src/bench.rs", "run", 184),
    ("lab/src/cluster_cmd.rs", "up", 185),
    ("node/src/config.rs", "validate", 258),
    ("node/src/runtime.rs", "start_uninitialized", 275),
    (
        "node/tests/directory.rs",
        "embedded_directory_is_replicated_and_survives_meta_leader_kill",
        180,
    ),
    (
        "node/tests/mta.rs",
        "relay_via_mx_with_dnsmasq_and_smtp_sink",
        176,
    ),
    ("raft-store/src/directory.rs", "apply_dir", 193),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "found only {} .rs files under {}",
        files.len(),
        root.display()
    );
    files
}

fn relative(p: &Path) -> String {
    p.strip_prefix(workspace())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn every_file_opens_with_a_doc_paragraph() {
    let mut missing = Vec::new();
    for f in all_files() {
        let text = std::fs::read_to_string(&f).expect("readable");
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(relative(&f));
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` paragraph saying what they are for: {missing:#?}"
    );
}

/// `(name, first line number, length in lines)` of every function in `text`.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let mut rest = t;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(sig) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // A body on the same line (`fn f() {}`).
        if t.contains('{') && t.matches('{').count() == t.matches('}').count() {
            out.push((name, i + 1, 1));
            continue;
        }
        // A declaration without a body (trait method) ends with `;` before any `{`.
        let closing = " ".repeat(indent) + "}";
        let end = lines[i..]
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, l)| l.starts_with(&closing) && l.len() - l.trim_start().len() == indent);
        let declares_only = lines[i..]
            .iter()
            .take(20)
            .find(|l| l.contains('{') || l.trim_end().ends_with(';'))
            .is_some_and(|l| !l.contains('{'));
        if declares_only {
            continue;
        }
        if let Some((n, _)) = end {
            out.push((name, i + 1, n + 1));
        }
    }
    out
}

#[test]
fn functions_stay_short() {
    let mut too_long = Vec::new();
    let mut seen_long = Vec::new();
    for f in all_files() {
        let rel = relative(&f);
        let text = std::fs::read_to_string(&f).expect("readable");
        for (name, line, len) in functions(&text) {
            if len <= MAX_FN_LINES {
                continue;
            }
            match LONG_FUNCTIONS
                .iter()
                .find(|(file, func, _)| *file == rel && *func == name)
            {
                Some((_, _, max)) if len <= *max => seen_long.push((rel.clone(), name)),
                Some((_, _, max)) => too_long.push(format!(
                    "{rel}:{line} {name}: {len} lines, grew past its {max}: split it"
                )),
                None => too_long.push(format!(
                    "{rel}:{line} {name}: {len} lines (at most {MAX_FN_LINES})"
                )),
            }
        }
    }
    assert!(too_long.is_empty(), "functions too long: {too_long:#?}");
    let stale: Vec<_> = LONG_FUNCTIONS
        .iter()
        .filter(|(file, func, _)| !seen_long.iter().any(|(f, n)| f == file && n == func))
        .collect();
    assert!(
        stale.is_empty(),
        "these entries of LONG_FUNCTIONS are no longer over {MAX_FN_LINES} lines (or gone): \
         remove them so they cannot grow back: {stale:?}"
    );
}

#[test]
fn the_function_measure_finds_bodies_not_declarations() {
    let text = "//! x\nfn a() {\n    let x = 1;\n}\n\ntrait T {\n    fn decl(&self);\n    fn def(&self) {\n        if true {\n        }\n    }\n    fn e() {}\n}\n";
    let f = functions(text);
    assert_eq!(
        f,
        vec![
            ("a".to_string(), 2, 3),
            ("def".to_string(), 8, 4),
            ("e".to_string(), 12, 1)
        ]
    );
}
