//! Tidy checks that `cargo test` enforces on the source tree: every Rust file
//! opens with a `//!` comment saying what it holds, and no test is skipped.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::run::workspace_root;

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target") {
                    rust_files(&path, out);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    fn all_rust_files() -> Vec<PathBuf> {
        let root = workspace_root();
        let mut files = Vec::new();
        for dir in ["crates", "xtask", "fuzz"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 5, "found too few Rust files under {}", root.display());
        files
    }

    #[test]
    fn every_rust_file_starts_with_a_module_doc_comment() {
        let offenders: Vec<String> = all_rust_files()
            .into_iter()
            .filter(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .map(|path| path.display().to_string())
            .collect();
        assert!(offenders.is_empty(), "files without a leading `//!` comment: {offenders:#?}");
    }

    #[test]
    fn no_test_is_ignored_or_expected_to_panic() {
        // Built from pieces so that this file does not match itself.
        let banned = [["#[", "ignore"].concat(), ["#[", "should_panic"].concat()];
        let mut offenders = Vec::new();
        for path in all_rust_files() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (number, line) in text.lines().enumerate() {
                if banned.iter().any(|pattern| line.contains(pattern.as_str())) {
                    offenders.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
                }
            }
        }
        assert!(offenders.is_empty(), "skipped tests: {offenders:#?}");
    }
}
