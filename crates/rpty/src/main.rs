//! The `rpty` command: parses the command line and runs it; see the
//! library documentation for what each part does.

fn main() -> std::process::ExitCode {
    rpty::run()
}
