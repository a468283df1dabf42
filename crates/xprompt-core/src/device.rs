//! The one place a `--device` choice becomes a candle [`Device`]: `cpu`, `cuda` or `cuda:N`.
//! A CPU-only build asked for CUDA, a machine without a driver and a device index that does
//! not exist are errors that say which.

use candle_core::Device;

use crate::error::{CoreError, Result};

/// Where a command computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => open_cuda(n),
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceChoice::Cuda(_))
    }
}

/// Whether this binary was built with the `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| {
        // candle appends a captured backtrace (RUST_BACKTRACE) to the text: keep the cause.
        let text = e.to_string();
        let cause = text.lines().next().unwrap_or_default();
        CoreError::Device(format!(
            "cuda:{n} cannot be opened ({cause}); `nvidia-smi` lists the devices this machine \
             has — is the NVIDIA driver installed and is there a device {n}?"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device> {
    Err(CoreError::Device(format!(
        "cuda:{n} asked for, but this xprompt was built without CUDA: build it with \
         `eval \"$(scripts/cuda-toolchain.sh)\" && cargo build --release --features cuda`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print() {
        for (s, d) in [
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), d);
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_always_opens_and_cuda_says_why_it_cannot() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !CUDA_BUILT {
            let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
        }
    }
}
