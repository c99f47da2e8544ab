//! NVIDIA GPUs through NVML.
//!
//! NVML is initialised once; when that fails (no driver, no permission, a
//! library too old) the failure is kept as the "no GPU" state and every
//! reading answers [`GpuState::Unavailable`] with the same reason, without
//! trying again or logging on each tick. A device that fails on one tick is
//! left out of that tick's reading while the others are kept, and is logged
//! once until it reads again.

use std::collections::BTreeSet;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;

use crate::model::{GpuSample, GpuState};

/// NVML, or why it is not here, plus which failures were already logged.
pub(crate) struct GpuProbe {
    /// The library handle, or the reason people see when it is missing.
    nvml: Result<Nvml, String>,
    /// Devices whose last reading failed, so each failure is logged once.
    failing_devices: BTreeSet<u32>,
    /// Whether counting the devices failed last time, logged once as well.
    count_failing: bool,
}

impl GpuProbe {
    /// Initialises NVML once. Never fails: a missing driver is a state.
    pub(crate) fn new() -> Self {
        Self {
            nvml: Nvml::init().map_err(|error| unavailable_reason(&error)),
            failing_devices: BTreeSet::new(),
            count_failing: false,
        }
    }

    /// Why there are no GPUs to show, when NVML could not start.
    pub(crate) fn unavailable(&self) -> Option<&str> {
        self.nvml.as_ref().err().map(String::as_str)
    }

    /// How many devices NVML sees, for the start-up log line.
    pub(crate) fn device_count(&self) -> Option<u32> {
        self.nvml.as_ref().ok()?.device_count().ok()
    }

    /// One reading of every device NVML sees.
    pub(crate) fn read(&mut self) -> GpuState {
        let nvml = match &self.nvml {
            Ok(nvml) => nvml,
            Err(reason) => {
                return GpuState::Unavailable {
                    reason: reason.clone(),
                };
            }
        };
        let count = match nvml.device_count() {
            Ok(count) => {
                if self.count_failing {
                    tracing::info!("NVML answers again");
                    self.count_failing = false;
                }
                count
            }
            Err(error) => {
                if !self.count_failing {
                    tracing::warn!(%error, "NVML could not count the GPUs");
                    self.count_failing = true;
                }
                return GpuState::Unavailable {
                    reason: format!("NVML could not count the GPUs: {error}"),
                };
            }
        };
        let mut devices = Vec::with_capacity(count as usize);
        for index in 0..count {
            match read_device(nvml, index) {
                Ok(sample) => {
                    if self.failing_devices.remove(&index) {
                        tracing::info!(gpu = index, "GPU reads again");
                    }
                    devices.push(sample);
                }
                Err(error) => {
                    if self.failing_devices.insert(index) {
                        tracing::warn!(gpu = index, %error, "GPU could not be read; left out until it recovers");
                    }
                }
            }
        }
        // A device that disappeared should not stay marked as failing.
        self.failing_devices.retain(|index| *index < count);
        GpuState::Available { devices }
    }
}

/// Reads one device; the temperature is optional, the rest is required.
fn read_device(nvml: &Nvml, index: u32) -> Result<GpuSample, NvmlError> {
    let device = nvml.device_by_index(index)?;
    let name = device.name()?;
    let utilization = device.utilization_rates()?;
    let memory = device.memory_info()?;
    let temperature_c = device.temperature(TemperatureSensor::Gpu).ok();
    Ok(GpuSample {
        index,
        name,
        utilization_percent: utilization.gpu.min(100) as f32,
        memory_used_bytes: memory.used,
        memory_total_bytes: memory.total,
        temperature_c,
        foreign_memory_bytes: foreign_memory(&device, memory.used),
    })
}

/// Of `used` bytes on a device, what programs other than this process and
/// its descendants (the tasks it started) use: everything NVML does not
/// attribute to one of ours, so memory it cannot attribute counts as
/// foreign. None when NVML lists no processes.
fn foreign_memory(device: &nvml_wrapper::Device<'_>, used: u64) -> Option<u64> {
    let compute = device.running_compute_processes().ok()?;
    let graphics = device.running_graphics_processes().unwrap_or_default();
    let me = std::process::id();
    let ours: u64 = compute
        .iter()
        .chain(&graphics)
        .filter(|process| descends_from(process.pid, me))
        .map(|process| match process.used_gpu_memory {
            nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) => bytes,
            nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => 0,
        })
        .sum();
    Some(used.saturating_sub(ours))
}

/// Whether process `pid` is `ancestor` or one of its descendants (its
/// parents read from /proc; elsewhere only the process itself counts).
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    // Deep enough for any process tree a task makes.
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 1 && parent != current => current = parent,
            _ => return false,
        }
    }
    false
}

/// A process's parent.
#[cfg(target_os = "linux")]
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces: the fields after it are
    // state, then the parent's id.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn parent_of(_pid: u32) -> Option<u32> {
    None
}

/// A plain sentence for people saying why NVML did not start.
fn unavailable_reason(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(_) => {
            "no NVIDIA driver found (libnvidia-ml.so.1 not loadable)".to_owned()
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".to_owned(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_owned(),
        NvmlError::FailedToLoadSymbol(symbol) => {
            format!("the NVIDIA driver is too old for this program (missing {symbol})")
        }
        other => format!("NVML could not start: {other}"),
    }
}

/// The NVIDIA GPUs of this machine: index and total memory in MB, in index
/// order; the error says why there are none to use (no driver, NVML
/// failed).
pub fn discover_gpus() -> Result<Vec<(u32, u64)>, String> {
    let nvml = Nvml::init().map_err(|error| unavailable_reason(&error))?;
    let count = nvml
        .device_count()
        .map_err(|error| format!("NVML cannot count devices: {error}"))?;
    (0..count)
        .map(|index| {
            let device = nvml
                .device_by_index(index)
                .map_err(|error| format!("NVML cannot open GPU {index}: {error}"))?;
            let memory = device
                .memory_info()
                .map_err(|error| format!("NVML cannot read GPU {index}'s memory: {error}"))?;
            Ok((index, memory.total / (1024 * 1024)))
        })
        .collect()
}

/// NVML, opened once for per-process readings (the sampler thread keeps its
/// own handle).
fn shared_nvml() -> Option<&'static Nvml> {
    static NVML: std::sync::OnceLock<Option<Nvml>> = std::sync::OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// The GPU memory, in MB, that the processes of process group `group` use
/// now on all devices (compute and graphics); none where NVML is missing
/// or reports no per-process usage.
pub fn process_group_gpu_memory_mb(group: u32) -> Option<u64> {
    let nvml = shared_nvml()?;
    let count = nvml.device_count().ok()?;
    let mut used_bytes = 0_u64;
    let mut readable = false;
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        let processes = device
            .running_compute_processes()
            .into_iter()
            .chain(device.running_graphics_processes())
            .flatten();
        readable = true;
        for process in processes {
            if group_of(process.pid) != Some(group) {
                continue;
            }
            if let nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) = process.used_gpu_memory
            {
                used_bytes = used_bytes.saturating_add(bytes);
            }
        }
    }
    readable.then_some(used_bytes / (1024 * 1024))
}

/// The process group of a process; none once it is gone.
#[cfg(unix)]
fn group_of(pid: u32) -> Option<u32> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: getpgid(2) takes a plain integer and touches no memory of ours.
    let group = unsafe { libc::getpgid(pid) };
    u32::try_from(group).ok()
}

#[cfg(not(unix))]
fn group_of(_pid: u32) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_descends_from_this_process_and_init_does_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep should start");
        let me = std::process::id();
        assert!(descends_from(child.id(), me));
        assert!(descends_from(me, me));
        assert!(!descends_from(1, me));
        assert_eq!(parent_of(child.id()), Some(me));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn missing_library_reads_as_a_plain_reason() {
        let reason = unavailable_reason(&NvmlError::DriverNotLoaded);
        assert_eq!(reason, "the NVIDIA driver is not loaded");
    }

    #[test]
    fn unavailable_probe_answers_the_same_reason_every_tick() {
        let mut probe = GpuProbe {
            nvml: Err("no NVIDIA driver found".to_owned()),
            failing_devices: BTreeSet::new(),
            count_failing: false,
        };
        for _ in 0..3 {
            assert_eq!(
                probe.read(),
                GpuState::Unavailable {
                    reason: "no NVIDIA driver found".to_owned()
                }
            );
        }
        assert_eq!(probe.unavailable(), Some("no NVIDIA driver found"));
    }
}
