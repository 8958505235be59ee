//! libvirt's error reports, handed to a Rust function.
//!
//! Every libvirt API call that fails "dispatches" its error: libvirt calls the error
//! function set with `virSetErrorFunc`, or, when none is set, prints
//! `libvirt: <domain> error : <message>` to stderr. A program that logs JSON cannot have
//! that line in its stream, and wants the report in its own log instead. The `virt` crate
//! (0.5) can only turn the printing off (`virt::error::clear_error_callback`); this crate
//! sets an error function that hands each report, as a [`LibvirtError`], to a plain Rust
//! function.
//!
//! It is the only crate of the project with `unsafe` code: one C callback that copies a
//! `virError` into owned Rust values, and the call that installs it. A panic in the Rust
//! function is caught there, never unwound into libvirt.

use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

/// One error report of libvirt (`virError`), copied out of libvirt's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtError {
    /// `virErrorNumber`, e.g. 38 `VIR_ERR_SYSTEM_ERROR`, 42 `VIR_ERR_NO_DOMAIN`.
    pub code: i32,
    /// `virErrorDomain`: the part of libvirt that raised it, e.g. 7 `VIR_FROM_RPC`.
    pub domain: i32,
    /// The error's text ("" when libvirt gave none).
    pub message: String,
    pub level: Level,
}

/// `virErrorLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Warning,
    Error,
}

impl LibvirtError {
    /// The name of [`LibvirtError::domain`] as libvirt's own printing words it, for the
    /// domains a client meets; `None` for the others.
    pub fn domain_name(&self) -> Option<&'static str> {
        // virerror.c's virErrorDomainName, for the domains a client library raises.
        let name = match self.domain as u32 {
            virt_sys::VIR_FROM_NONE => "none",
            virt_sys::VIR_FROM_QEMU => "QEMU Driver",
            virt_sys::VIR_FROM_CONF => "Config File",
            virt_sys::VIR_FROM_DOM => "Domain Config",
            virt_sys::VIR_FROM_RPC => "XML-RPC",
            virt_sys::VIR_FROM_REMOTE => "Remote",
            virt_sys::VIR_FROM_DOMAIN => "Domain",
            virt_sys::VIR_FROM_URI => "URI Utils",
            virt_sys::VIR_FROM_AUTH => "Auth Utils",
            virt_sys::VIR_FROM_EVENT => "Events",
            virt_sys::VIR_FROM_THREAD => "Threads",
            virt_sys::VIR_FROM_SECURITY => "Security Labeling",
            _ => return None,
        };
        Some(name)
    }
}

/// Where reports go; set once per process (libvirt's error function is global).
static HANDLER: OnceLock<fn(&LibvirtError)> = OnceLock::new();

/// Hands every error libvirt dispatches from now on to `handler`, on the thread whose call
/// failed, instead of printing it to stderr. Calls after the first change nothing and
/// return `false`: libvirt's error function is one per process.
///
/// `handler` runs inside libvirt's failing call, so it must be quick and must not call
/// libvirt. A panic in it is caught and the report dropped.
pub fn route_errors(handler: fn(&LibvirtError)) -> bool {
    if HANDLER.set(handler).is_err() {
        return false;
    }
    // SAFETY: virSetErrorFunc stores the pointers in libvirt's globals under its own lock
    // and may be called at any time; `on_error` matches `virErrorFunc` and never unwinds,
    // and the user data is unused (null).
    unsafe { virt_sys::virSetErrorFunc(std::ptr::null_mut(), Some(on_error)) };
    true
}

/// libvirt's `virErrorFunc`: copies the report and hands it on.
unsafe extern "C" fn on_error(_user_data: *mut c_void, error: virt_sys::virErrorPtr) {
    if error.is_null() {
        return;
    }
    // SAFETY: libvirt passes a `virError` it owns, valid for the duration of the call; it
    // is only read, and its strings are copied before the call returns.
    let report = unsafe { copy_error(&*error) };
    if let Some(handler) = HANDLER.get() {
        // Unwinding into C is undefined behaviour: a panicking handler loses the report.
        let _ = catch_unwind(AssertUnwindSafe(|| handler(&report)));
    }
}

/// # Safety
/// `error.message` is null or a NUL-terminated string valid for the call.
unsafe fn copy_error(error: &virt_sys::virError) -> LibvirtError {
    LibvirtError {
        code: error.code,
        domain: error.domain,
        // SAFETY: the caller's contract.
        message: unsafe { text(error.message) },
        level: match error.level {
            virt_sys::VIR_ERR_WARNING => Level::Warning,
            virt_sys::VIR_ERR_ERROR => Level::Error,
            _ => Level::None,
        },
    }
}

/// # Safety
/// `text` is null or a NUL-terminated string valid for the call.
unsafe fn text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    static SEEN: Mutex<Vec<LibvirtError>> = Mutex::new(Vec::new());

    fn record(error: &LibvirtError) {
        SEEN.lock().unwrap().push(error.clone());
    }

    /// A failed connect dispatches its error: the handler gets it, in full, on the failing
    /// thread, and a second route is refused. (libvirt0 must be installed: the test links
    /// it, as the gateway's libvirt binary does.)
    #[test]
    fn a_failed_call_hands_its_error_to_the_handler() {
        assert!(route_errors(record));
        assert!(!route_errors(|_| {}));
        let uri = c"qemu+unix:///session?socket=/nonexistent/libvirt-errors-test-sock";
        // SAFETY: a NUL-terminated URI; a null connection is the expected result.
        let connection = unsafe { virt_sys::virConnectOpen(uri.as_ptr()) };
        assert!(connection.is_null());
        let seen = SEEN.lock().unwrap();
        let error = seen.last().expect("no error reached the handler");
        assert_eq!(error.code, virt_sys::VIR_ERR_SYSTEM_ERROR as i32);
        assert_eq!(error.domain_name(), Some("XML-RPC"));
        assert_eq!(error.level, Level::Error);
        assert_eq!(
            error.message,
            "Failed to connect socket to '/nonexistent/libvirt-errors-test-sock': No such file or directory"
        );
    }
}
