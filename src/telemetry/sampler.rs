//! One reading of the machine: CPU, memory and disks through sysinfo, GPUs
//! through [`GpuProbe`].
//!
//! A [`Sampler`] keeps the sysinfo handles between readings, because CPU use
//! is a difference between two refreshes and the disk list is cheaper to
//! refresh than to rebuild.

use std::collections::HashMap;

use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MINIMUM_CPU_UPDATE_INTERVAL, MemoryRefreshKind,
    RefreshKind, System,
};

use super::TelemetryError;
use super::gpu::GpuProbe;
use crate::model::{DiskSample, ResourceSample, now_us};

/// File systems that hold no user data: kernel views, memory-backed scratch
/// space, read-only images and network mounts that may hang.
const PSEUDO_FILE_SYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "cifs",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.lxcfs",
    "fuse.snapfuse",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfs",
    "nfs4",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// The sysinfo and NVML handles kept between readings.
pub(crate) struct Sampler {
    system: System,
    disks: Disks,
    gpus: GpuProbe,
}

impl Sampler {
    /// Opens the handles and takes the first CPU reading.
    ///
    /// CPU use is only meaningful after a second refresh at least
    /// [`MINIMUM_CPU_UPDATE_INTERVAL`] later; [`Sampler::warm_up`] says how
    /// long to wait before the first [`Sampler::sample`].
    pub(crate) fn new() -> Result<Self, TelemetryError> {
        let refresh = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        let system = System::new_with_specifics(refresh).map_err(TelemetryError::system)?;
        let disks = Disks::new_with_refreshed_list_specifics(disk_refresh())
            .map_err(TelemetryError::system)?;
        Ok(Self {
            system,
            disks,
            gpus: GpuProbe::new(),
        })
    }

    /// How long after [`Sampler::new`] the first CPU reading is accurate.
    pub(crate) fn warm_up() -> std::time::Duration {
        MINIMUM_CPU_UPDATE_INTERVAL
    }

    /// The GPU probe, for the start-up log line.
    pub(crate) fn gpus(&self) -> &GpuProbe {
        &self.gpus
    }

    /// Refreshes everything and returns an owned reading.
    pub(crate) fn sample(&mut self) -> ResourceSample {
        let Self {
            system,
            disks,
            gpus,
        } = self;
        system.refresh_cpu_usage();
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        // Passing true drops disks that were unmounted since the last tick.
        disks.refresh_specifics(true, disk_refresh());
        let raw_disks = disks.iter().map(|disk| RawDisk {
            device: disk.name().to_string_lossy().into_owned(),
            mount: disk.mount_point().to_string_lossy().into_owned(),
            file_system: disk.file_system().to_string_lossy().into_owned(),
            total_bytes: disk.total_space(),
            available_bytes: disk.available_space(),
        });
        ResourceSample {
            at_us: now_us(),
            cpu_percent: clamp_percent(system.global_cpu_usage()),
            cpu_per_core: system
                .cpus()
                .iter()
                .map(|cpu| clamp_percent(cpu.usage()))
                .collect(),
            memory_used_bytes: system.used_memory(),
            memory_total_bytes: system.total_memory(),
            disks: select_disks(raw_disks),
            gpus: gpus.read(),
        }
    }
}

/// Takes one reading without a thread, for command-line use.
///
/// It blocks about [`MINIMUM_CPU_UPDATE_INTERVAL`] (200 ms on Linux), the
/// least time over which CPU use can be measured, and initialises NVML for
/// this one reading, so a long-running program should use
/// [`Telemetry`](super::Telemetry) instead.
pub fn sample_once() -> Result<ResourceSample, TelemetryError> {
    let mut sampler = Sampler::new()?;
    // A one-shot reading has nothing to cancel, so a plain sleep is right here.
    std::thread::sleep(Sampler::warm_up());
    Ok(sampler.sample())
}

/// Only the capacity of disks is read, not their kind or I/O counters.
fn disk_refresh() -> DiskRefreshKind {
    DiskRefreshKind::nothing().with_storage()
}

/// A disk as sysinfo lists it, before filtering.
#[derive(Debug, Clone)]
pub(crate) struct RawDisk {
    /// Device or source, e.g. `/dev/sda1` or `overlay`.
    pub(crate) device: String,
    /// Mount point.
    pub(crate) mount: String,
    /// File system type, e.g. `ext4`.
    pub(crate) file_system: String,
    /// Capacity in bytes.
    pub(crate) total_bytes: u64,
    /// Bytes free for unprivileged users.
    pub(crate) available_bytes: u64,
}

/// Chooses the disks worth showing.
///
/// - Pseudo, memory-backed and network file systems are skipped.
/// - Disks with no capacity are skipped.
/// - The same file system mounted more than once (bind mounts, which
///   containers use for `/etc/hosts` and friends) is shown once, at its
///   shortest mount point; "the same" means the same device and capacity.
/// - The result is sorted by mount point so it reads the same every tick.
pub(crate) fn select_disks(raw: impl IntoIterator<Item = RawDisk>) -> Vec<DiskSample> {
    let mut by_file_system: HashMap<(String, u64), DiskSample> = HashMap::new();
    for disk in raw {
        let RawDisk {
            device,
            mount,
            file_system,
            total_bytes,
            available_bytes,
        } = disk;
        if total_bytes == 0 || PSEUDO_FILE_SYSTEMS.contains(&file_system.as_str()) {
            continue;
        }
        let candidate = DiskSample {
            mount,
            used_bytes: total_bytes.saturating_sub(available_bytes),
            total_bytes,
        };
        by_file_system
            .entry((device, total_bytes))
            .and_modify(|kept| {
                if shorter_mount(&candidate.mount, &kept.mount) {
                    *kept = candidate.clone();
                }
            })
            .or_insert(candidate);
    }
    let mut disks: Vec<DiskSample> = by_file_system.into_values().collect();
    disks.sort_by(|a, b| a.mount.cmp(&b.mount));
    disks
}

/// Whether mount `a` is the better name than `b`: shorter, then smaller.
fn shorter_mount(a: &str, b: &str) -> bool {
    (a.len(), a) < (b.len(), b)
}

/// Keeps a percentage within 0-100, reading NaN as 0.
fn clamp_percent(value: f32) -> f32 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 100.0)
    }
}

/// This machine's host name, as the operating system reports it; `unknown`
/// when it cannot tell.
pub fn host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(device: &str, mount: &str, file_system: &str, total: u64, available: u64) -> RawDisk {
        RawDisk {
            device: device.to_owned(),
            mount: mount.to_owned(),
            file_system: file_system.to_owned(),
            total_bytes: total,
            available_bytes: available,
        }
    }

    #[test]
    fn pseudo_and_empty_file_systems_are_skipped() {
        let disks = select_disks([
            raw("/dev/sda1", "/", "ext4", 100, 40),
            raw("tmpfs", "/dev/shm", "tmpfs", 50, 50),
            raw("proc", "/proc", "proc", 0, 0),
            raw("/dev/sdb1", "/data", "xfs", 0, 0),
        ]);
        assert_eq!(
            disks,
            vec![DiskSample {
                mount: "/".to_owned(),
                used_bytes: 60,
                total_bytes: 100,
            }]
        );
    }

    #[test]
    fn bind_mounts_show_once_at_the_shortest_mount() {
        let disks = select_disks([
            raw("/dev/sda1", "/etc/hosts", "ext4", 100, 40),
            raw("/dev/sda1", "/", "ext4", 100, 40),
            raw("/dev/sda1", "/etc/resolv.conf", "ext4", 100, 40),
            raw("/dev/sdb1", "/data", "xfs", 500, 500),
        ]);
        let mounts: Vec<&str> = disks.iter().map(|disk| disk.mount.as_str()).collect();
        assert_eq!(mounts, ["/", "/data"]);
    }

    #[test]
    fn percentages_stay_in_range() {
        assert_eq!(clamp_percent(f32::NAN), 0.0);
        assert_eq!(clamp_percent(-1.0), 0.0);
        assert_eq!(clamp_percent(100.5), 100.0);
        assert_eq!(clamp_percent(42.0), 42.0);
    }
}
