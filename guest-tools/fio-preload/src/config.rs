//! The environment: `FIO_INTERCEPT_ENABLE`, `FIO_MEM_DEVICE`,
//! `FIO_MEM_OFFSET`, `FIO_MEM_SIZE`, `FIO_FILE_SIZE`,
//! `FIO_INTERCEPT_PATTERN`, `FIO_DEBUG`, read with `getenv` into fixed buffers.

use core::ffi::CStr;

use crate::num::{parse_size, NumError};

/// Longest `FIO_MEM_DEVICE` path kept.
pub const DEVICE_MAX: usize = 4096;
/// Longest `FIO_INTERCEPT_PATTERN` kept.
pub const PATTERN_MAX: usize = 1024;
/// Pattern always claimed (this library's earlier default, kept so that
/// scripts written for it still work); `FIO_INTERCEPT_PATTERN` adds to it and
/// to fio's data files (`crate::fio_files`).
pub const DEFAULT_PATTERN: &[u8] = b"*.cxl";

/// What is wrong with the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "FIO_MEM_DEVICE is not set; set it to the DAX device or file to map (e.g. /dev/dax0.0)."
    )]
    NoDevice,
    #[error("FIO_MEM_DEVICE is longer than {DEVICE_MAX} bytes; use a shorter path (e.g. a symbolic link).")]
    DeviceTooLong,
    #[error("FIO_INTERCEPT_PATTERN is longer than {PATTERN_MAX} bytes; use a shorter pattern.")]
    PatternTooLong,
    #[error("{var} cannot be read: {reason}")]
    BadNumber { var: &'static str, reason: NumError },
    #[error("FIO_FILE_SIZE must be greater than zero; set a size such as 1G, or unset it to give one file the whole window.")]
    ZeroFileSize,
    #[error("FIO_DEBUG must be 0, 1 or 2; set one of those or unset it.")]
    BadDebug,
}

/// The parsed environment.
pub struct Config {
    pub enabled: bool,
    pub debug: u8,
    device: [u8; DEVICE_MAX],
    device_len: usize,
    pattern: [u8; PATTERN_MAX],
    pattern_len: usize,
    pub mem_offset: u64,
    pub mem_size: Option<u64>,
    pub file_size: Option<u64>,
}

impl Config {
    pub const fn empty() -> Self {
        Config {
            enabled: false,
            debug: 0,
            device: [0; DEVICE_MAX],
            device_len: 0,
            pattern: [0; PATTERN_MAX],
            pattern_len: 0,
            mem_offset: 0,
            mem_size: None,
            file_size: None,
        }
    }

    /// The device path, NUL-terminated.
    pub fn device_c(&self) -> &[u8] {
        &self.device[..=self.device_len]
    }

    pub fn device(&self) -> &[u8] {
        &self.device[..self.device_len]
    }

    /// `FIO_INTERCEPT_PATTERN`, empty when unset.
    pub fn pattern(&self) -> &[u8] {
        &self.pattern[..self.pattern_len]
    }

    /// Reads the environment into `self`. `debug` and `enabled` are set even
    /// when an error is returned, so the error can be reported.
    pub fn load(&mut self) -> Result<(), ConfigError> {
        self.enabled = env(b"FIO_INTERCEPT_ENABLE\0").is_some_and(truthy);
        self.debug = match env(b"FIO_DEBUG\0") {
            None | Some(b"") | Some(b"0") => 0,
            Some(b"1") => 1,
            Some(b"2") => 2,
            Some(_) => {
                self.debug = 1;
                return Err(ConfigError::BadDebug);
            }
        };
        let pattern = env(b"FIO_INTERCEPT_PATTERN\0").unwrap_or_default();
        if pattern.len() > PATTERN_MAX {
            return Err(ConfigError::PatternTooLong);
        }
        self.pattern[..pattern.len()].copy_from_slice(pattern);
        self.pattern_len = pattern.len();
        if !self.enabled {
            return Ok(());
        }
        let device = match env(b"FIO_MEM_DEVICE\0") {
            None | Some(b"") => return Err(ConfigError::NoDevice),
            Some(d) => d,
        };
        if device.len() >= DEVICE_MAX {
            return Err(ConfigError::DeviceTooLong);
        }
        self.device[..device.len()].copy_from_slice(device);
        self.device[device.len()] = 0;
        self.device_len = device.len();
        self.mem_offset = number(b"FIO_MEM_OFFSET\0", "FIO_MEM_OFFSET")?.unwrap_or(0);
        self.mem_size = number(b"FIO_MEM_SIZE\0", "FIO_MEM_SIZE")?;
        self.file_size = number(b"FIO_FILE_SIZE\0", "FIO_FILE_SIZE")?;
        if self.file_size == Some(0) {
            return Err(ConfigError::ZeroFileSize);
        }
        Ok(())
    }
}

fn truthy(v: &[u8]) -> bool {
    matches!(
        v,
        b"1" | b"yes" | b"true" | b"on" | b"YES" | b"TRUE" | b"ON"
    )
}

fn number(key: &[u8], var: &'static str) -> Result<Option<u64>, ConfigError> {
    match env(key) {
        None | Some(b"") => Ok(None),
        Some(v) => parse_size(v)
            .map(Some)
            .map_err(|reason| ConfigError::BadNumber { var, reason }),
    }
}

/// `getenv` as bytes; the result points into the environment block.
fn env(key: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `key` is NUL-terminated; getenv returns a C string or null.
    unsafe {
        let p = libc::getenv(key.as_ptr().cast());
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_bytes())
        }
    }
}
