//! Tools a test needs that a machine may lack, and stand-ins for tools a test fakes.
//!
//! A test whose tool is missing says so loudly and passes, unless `PIPEWATCH_REQUIRE_TOOLS=1`
//! is set (`.ci/run` sets it, after installing every tool), which makes the skip a failure.
//! Debian packages: `chromium` and `chromium-driver` (the page tests), `cron` (`crontab`),
//! `python3-aiosmtpd` (the SMTP server of the e-mail alert tests).
//! (`systemd-analyze`, for the unit files, is probed by the unit tests in
//! `src/scheduler/systemd.rs`, the same way.)

use std::path::PathBuf;

/// Where `name` is on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `true` if nothing is missing; otherwise a loud skip (`false`), or a failure under
/// `PIPEWATCH_REQUIRE_TOOLS=1`.
pub fn present(missing: &[&str], install: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if std::env::var("PIPEWATCH_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test} needs {missing} on PATH (PIPEWATCH_REQUIRE_TOOLS=1)");
    }
    eprintln!(
        "\n\
         ************************************************************************\n\
         *** SKIPPED {test}: {missing} not found on PATH.\n\
         *** Install {install} to run it;\n\
         *** set PIPEWATCH_REQUIRE_TOOLS=1 to make this a failure.\n\
         ************************************************************************\n"
    );
    false
}

/// Chromium and its WebDriver.
pub struct Chromium {
    pub chromium: PathBuf,
    pub driver: PathBuf,
}

/// Chromium (`PIPEWATCH_CHROMIUM`, or `chromium`, `chromium-browser`, `google-chrome` on
/// `PATH`) and chromedriver (`PIPEWATCH_CHROMEDRIVER`, or `chromedriver`); `None` if either is
/// missing (see the module doc).
pub fn chromium() -> Option<Chromium> {
    let chromium = std::env::var_os("PIPEWATCH_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which("chromium"))
        .or_else(|| which("chromium-browser"))
        .or_else(|| which("google-chrome"));
    let driver = std::env::var_os("PIPEWATCH_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which("chromedriver"));
    let missing: Vec<&str> = [
        ("chromium", chromium.is_none()),
        ("chromedriver", driver.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    if !present(&missing, "Debian's `chromium` and `chromium-driver`") {
        return None;
    }
    Some(Chromium {
        chromium: chromium?,
        driver: driver?,
    })
}

/// Whether `crontab` is there (see the module doc). Unix only, like cron.
#[cfg(unix)]
pub fn crontab() -> bool {
    let missing: &[&str] = if which("crontab").is_some() {
        &[]
    } else {
        &["crontab"]
    };
    present(missing, "Debian's `cron`")
}

/// A Python 3 that has aiosmtpd (see the module doc): Debian's `/usr/bin/python3`, where
/// `python3-aiosmtpd` installs it, or else the `python3` on `PATH` (which may be another).
#[cfg(unix)]
pub fn python_with_aiosmtpd() -> Option<PathBuf> {
    let found = [PathBuf::from("/usr/bin/python3")]
        .into_iter()
        .chain(which("python3"))
        .filter(|p| p.is_file())
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import aiosmtpd"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    let missing: &[&str] = if found.is_some() {
        &[]
    } else {
        &["python3 with aiosmtpd"]
    };
    if !present(missing, "Debian's `python3-aiosmtpd`") {
        return None;
    }
    found
}

/// Writes `script` as an executable `bin/NAME` in `dir`; a `PATH` that finds it before the
/// real tool.
#[cfg(unix)]
pub fn stand_in(dir: &std::path::Path, name: &str, script: &str) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin folder");
    let path = bin.join(name);
    std::fs::write(&path, script).expect("write the stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the stand-in executable");
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("a PATH")
}
