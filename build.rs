//! Records the git commit the binary is built from, for `pipewatch --version`. Without git (a
//! source tarball, a machine without it) the commit is "unknown": this never fails the build.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PIPEWATCH_COMMIT={commit}");
    // Rebuild the version when HEAD moves: HEAD itself, the branch it points to, packed refs.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_else(|| git_dir.clone());
        let mut watch = vec![Path::new(&git_dir).join("HEAD")];
        if let Some(r) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
            watch.push(Path::new(&common).join(r));
        }
        watch.push(Path::new(&common).join("packed-refs"));
        for p in watch.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
