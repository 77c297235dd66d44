//! Whether the native file dialog (rfd: the XDG desktop portal, else
//! zenity) can open here, found out before trying it, so that the in-app
//! chooser ([`super::file_browser`]) opens instead of nothing.
//!
//! `CLEANDIFT_FILE_DIALOG=builtin` (or the setting) always uses the in-app
//! chooser; `=native` always tries the native one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable that picks the chooser.
pub const ENV: &str = "CLEANDIFT_FILE_DIALOG";

/// Which chooser to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chooser {
    /// The native dialog (its reason, for the log).
    Native(String),
    /// The native dialog, if the portal answers on the session bus (only
    /// known by asking the bus: done off the UI thread).
    NativeIfPortal,
    /// The in-app chooser, and why.
    Builtin(String),
}

/// What the probe looks at (the process environment by default; tests set
/// their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeEnv {
    /// `CLEANDIFT_FILE_DIALOG`.
    pub force: Option<String>,
    /// `PATH`.
    pub path: Option<OsString>,
    /// `DBUS_SESSION_BUS_ADDRESS`.
    pub session_bus: Option<OsString>,
    /// `XDG_RUNTIME_DIR` (the bus socket `bus` may live there).
    pub runtime_dir: Option<PathBuf>,
}

impl ProbeEnv {
    pub fn from_env() -> ProbeEnv {
        ProbeEnv {
            force: std::env::var(ENV).ok(),
            path: std::env::var_os("PATH"),
            session_bus: std::env::var_os("DBUS_SESSION_BUS_ADDRESS").filter(|s| !s.is_empty()),
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    /// An executable `name` on `PATH`.
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        std::env::split_paths(path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }

    /// Whether a session bus can be reached at all.
    pub fn has_session_bus(&self) -> bool {
        self.session_bus.is_some()
            || self
                .runtime_dir
                .as_ref()
                .is_some_and(|d| d.join("bus").exists())
    }
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The quick part of the probe (no process started): `setting_builtin` is
/// the app's "always use the in-app chooser" setting.
pub fn probe(env: &ProbeEnv, setting_builtin: bool) -> Chooser {
    match env.force.as_deref().map(str::trim) {
        Some("builtin" | "in-app" | "app") => {
            return Chooser::Builtin(format!("{ENV}=builtin"));
        }
        Some("native") => return Chooser::Native(format!("{ENV}=native")),
        _ => {}
    }
    if setting_builtin {
        return Chooser::Builtin("the in-app chooser is chosen in Settings".into());
    }
    if !cfg!(target_os = "linux") {
        return Chooser::Native("the system dialog".into());
    }
    if let Some(z) = env.which("zenity") {
        return Chooser::Native(format!("zenity at {}", z.display()));
    }
    if env.has_session_bus() {
        return Chooser::NativeIfPortal;
    }
    Chooser::Builtin("no desktop portal (no session bus) and no zenity on PATH".into())
}

/// Asks the session bus whether the desktop portal is there (running or
/// activatable), with `dbus-send` or `busctl`; `None` when neither tool
/// answers within `timeout`.
pub fn portal_on_bus(env: &ProbeEnv, timeout: Duration) -> Option<bool> {
    const NAME: &str = "org.freedesktop.portal.Desktop";
    let mut tries: Vec<Vec<&str>> = Vec::new();
    for method in ["ListNames", "ListActivatableNames"] {
        tries.push(vec![
            "dbus-send",
            "--session",
            "--dest=org.freedesktop.DBus",
            "--type=method_call",
            "--print-reply",
            "/org/freedesktop/DBus",
            if method == "ListNames" {
                "org.freedesktop.DBus.ListNames"
            } else {
                "org.freedesktop.DBus.ListActivatableNames"
            },
        ]);
    }
    tries.push(vec!["busctl", "--user", "--no-pager", "--acquired", "list"]);
    tries.push(vec![
        "busctl",
        "--user",
        "--no-pager",
        "--activatable",
        "list",
    ]);
    let mut answered = false;
    for t in tries {
        let Some(exe) = env.which(t[0]) else {
            continue;
        };
        if let Some(out) = run_with_timeout(&exe, &t[1..], timeout) {
            answered = true;
            if out.contains(NAME) {
                return Some(true);
            }
        }
    }
    answered.then_some(false)
}

/// Runs `exe args` and returns its stdout if it exits successfully within
/// `timeout` (killed otherwise).
fn run_with_timeout(exe: &Path, args: &[&str], timeout: Duration) -> Option<String> {
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut s = String::new();
                if let Some(mut o) = child.stdout.take() {
                    use std::io::Read as _;
                    o.read_to_string(&mut s).ok()?;
                }
                return status.success().then_some(s);
            }
            Ok(None) if t0.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin_dir(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            let p = d.path().join(n);
            std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        d
    }

    #[test]
    fn no_portal_no_zenity_is_builtin() {
        let empty = bin_dir(&[]);
        let env = ProbeEnv {
            path: Some(empty.path().as_os_str().to_owned()),
            ..ProbeEnv::default()
        };
        assert!(matches!(probe(&env, false), Chooser::Builtin(r) if r.contains("no zenity")));
        // No tool to ask the bus: unknown.
        assert_eq!(portal_on_bus(&env, Duration::from_secs(1)), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn zenity_or_a_bus_means_native() {
        let z = bin_dir(&["zenity"]);
        let env = ProbeEnv {
            path: Some(z.path().as_os_str().to_owned()),
            ..ProbeEnv::default()
        };
        assert!(matches!(probe(&env, false), Chooser::Native(r) if r.contains("zenity at")));
        // A non-executable zenity does not count.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("zenity"), "").unwrap();
        let env = ProbeEnv {
            path: Some(d.path().as_os_str().to_owned()),
            session_bus: Some("unix:path=/nonexistent".into()),
            ..ProbeEnv::default()
        };
        assert_eq!(probe(&env, false), Chooser::NativeIfPortal);
        // A runtime dir with a bus socket counts as a bus.
        let rt = tempfile::tempdir().unwrap();
        std::fs::write(rt.path().join("bus"), "").unwrap();
        let env = ProbeEnv {
            runtime_dir: Some(rt.path().to_path_buf()),
            ..ProbeEnv::default()
        };
        assert_eq!(probe(&env, false), Chooser::NativeIfPortal);
    }

    #[test]
    fn forced_choices() {
        let z = bin_dir(&["zenity"]);
        let mut env = ProbeEnv {
            path: Some(z.path().as_os_str().to_owned()),
            force: Some("builtin".into()),
            ..ProbeEnv::default()
        };
        assert!(matches!(probe(&env, false), Chooser::Builtin(_)));
        env.force = None;
        assert!(matches!(probe(&env, true), Chooser::Builtin(r) if r.contains("Settings")));
        env.force = Some("native".into());
        env.path = None;
        assert!(matches!(probe(&env, true), Chooser::Native(_)));
    }

    #[cfg(unix)]
    #[test]
    fn bus_answers_are_read() {
        // A fake dbus-send that lists the portal; one that does not.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dbus-send");
        std::fs::write(
            &p,
            "#!/bin/sh\necho 'string \"org.freedesktop.portal.Desktop\"'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = ProbeEnv {
            path: Some(d.path().as_os_str().to_owned()),
            ..ProbeEnv::default()
        };
        // Retried: exec of a just-written script can meet ETXTBSY when
        // another test thread forks at that moment.
        let ask = || (0..5).find_map(|_| portal_on_bus(&env, Duration::from_secs(20)));
        assert_eq!(ask(), Some(true));
        std::fs::write(&p, "#!/bin/sh\necho 'string \"org.a11y.Bus\"'\n").unwrap();
        assert_eq!(ask(), Some(false));
    }
}
