//! Reading cargo's test output into per-package counts.

use std::collections::BTreeMap;

/// What one package's test run reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed (a build failure counts as one).
    pub failed: usize,
    /// Tests that were ignored.
    pub ignored: usize,
    /// Names of the failed tests.
    pub failures: Vec<String>,
    /// Conformance case → passed?, from the conformance test binary.
    pub cases: BTreeMap<String, bool>,
}

impl Outcome {
    /// Adds the counts of another run of the same package (another feature set).
    pub fn absorb(&mut self, other: Outcome) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.failures.extend(other.failures);
        for (case, passed) in other.cases {
            let entry = self.cases.entry(case).or_insert(true);
            *entry &= passed;
        }
    }
}

/// Parses the `test NAME ... ok|FAILED|ignored` lines of `cargo test`; lines of test
/// binaries named `conformance*` are also recorded as conformance cases.
pub fn parse(output: &str) -> Outcome {
    let mut outcome = Outcome::default();
    let mut in_conformance = false;
    for line in output.lines() {
        let trimmed = line.trim();
        if let Some(target) = trimmed.strip_prefix("Running ") {
            in_conformance = target.contains("/conformance");
            continue;
        }
        if trimmed.starts_with("Doc-tests ") {
            in_conformance = false;
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("test ") else {
            continue;
        };
        let Some((name, verdict)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        match verdict {
            "ok" => outcome.passed += 1,
            "FAILED" => {
                outcome.failed += 1;
                outcome.failures.push(name.to_owned());
            }
            v if v.starts_with("ignored") => outcome.ignored += 1,
            _ => continue,
        }
        if in_conformance && !verdict.starts_with("ignored") {
            outcome.cases.insert(name.to_owned(), verdict == "ok");
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_verdicts_and_conformance_cases() {
        let output = "\
     Running unittests src/lib.rs (target/debug/deps/x-1)
test config::tests::a ... ok
     Running tests/conformance.rs (target/debug/deps/conformance-2)
test watch ... ok
test lock_ttl ... FAILED
test slow ... ignored, needs a server
   Doc-tests x
test src/lib.rs - (line 3) ... ok
";
        let outcome = parse(output);
        assert_eq!((outcome.passed, outcome.failed, outcome.ignored), (3, 1, 1));
        assert_eq!(outcome.failures, ["lock_ttl"]);
        assert_eq!(outcome.cases.len(), 2);
        assert_eq!(outcome.cases.get("watch"), Some(&true));
        assert_eq!(outcome.cases.get("lock_ttl"), Some(&false));
    }
}
