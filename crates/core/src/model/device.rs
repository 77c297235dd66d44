//! `--device auto|cpu|cuda[:N]` and `--dtype f32|f16|bf16`.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use super::ModelError;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when compiled in and present, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(ModelError::BadDevice(s.to_string())),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `Cuda` without the `cuda` feature or without a GPU
    /// is an error that says how to get one; `Auto` falls back to the CPU.
    pub fn open(self) -> Result<Device, ModelError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Device::new_cuda(0).or(Ok(Device::Cpu))
                } else {
                    Ok(Device::Cpu)
                }
            }
            DeviceChoice::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(ModelError::CudaUnavailable);
                }
                Device::new_cuda(n).map_err(|source| ModelError::DeviceOpen { index: n, source })
            }
        }
    }
}

/// Parses `f32`, `f16`, `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType, ModelError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(ModelError::BadDtype(other.to_string())),
    }
}

/// The default dtype for a device: f32 on the CPU, bf16 on CUDA (f32's
/// exponent range, so SD2.1's activations cannot overflow as they do in
/// f16; CleanDIFT trains and runs its student in bf16; docs/NUMERICS.md §9).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().ok(),
            Some(DeviceChoice::Cuda(1))
        );
        assert_eq!("CPU".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cpu));
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(parse_dtype("bf16").ok(), Some(DType::BF16));
        assert!(parse_dtype("f8").is_err());
        assert_eq!(default_dtype(&Device::Cpu), DType::F32);
    }
}
