//! RFC 6902 conformance (json-patch-tests) and the golden transcript, natively.
//! The browser runs the same through `tests/wasm.rs`.

#![cfg(not(target_arch = "wasm32"))]

mod support;

use support::{Conformance, SPEC_TESTS_JSON, TESTS_JSON, run_conformance};

#[test]
fn json_patch_tests_pass() {
    let mut c = Conformance::default();
    run_conformance("tests.json", TESTS_JSON, &mut c);
    assert!(
        c.failures.is_empty(),
        "failures:\n{}",
        c.failures.join("\n")
    );
    // 95 records: 3 disabled, none comment-only.
    assert_eq!((c.passed, c.disabled, c.comments), (92, 3, 0));
}

#[test]
fn spec_tests_pass() {
    let mut c = Conformance::default();
    run_conformance("spec_tests.json", SPEC_TESTS_JSON, &mut c);
    assert!(
        c.failures.is_empty(),
        "failures:\n{}",
        c.failures.join("\n")
    );
    assert_eq!((c.passed, c.disabled, c.comments), (16, 1, 0));
}

/// Native output must equal `tests/data/golden.txt`, which the browser test checks too.
/// After an intended change of output: `UPDATE_GOLDEN=1 cargo test -p patchbay-materializer
/// --test conformance`, review the diff, and bump `MATERIALIZER_VERSION`.
#[test]
fn transcript_matches_golden() {
    let (_, transcript) = support::full_run();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &transcript).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(path).unwrap();
    if transcript != golden {
        let line = transcript
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .map_or("(length differs)".to_owned(), |n| format!("line {}", n + 1));
        panic!(
            "output differs from tests/data/golden.txt at {line}; if intended, regenerate it with \
             UPDATE_GOLDEN=1 and bump MATERIALIZER_VERSION"
        );
    }
}
