//! GPU devices and who holds them: whole devices, or a share of one
//! device's memory. Pure bookkeeping, used for this machine's devices and,
//! rebuilt from what runs there, for each worker process's.
//!
//! Rules:
//! - a request for whole devices (GPUs without `gpu_memory_mb`, or more
//!   than one GPU) takes devices nobody holds, each with at least the
//!   memory asked for, if any;
//! - a request for one GPU with `gpu_memory_mb` takes a share of one
//!   device that nobody holds whole: the shares on it, the memory that
//!   programs Taskdeck did not start use there, and this request must fit
//!   its memory; a device of unknown memory is shared with nobody;
//! - of the devices a share fits, the one with the least memory left is
//!   chosen, so whole devices stay free for whole requests.

use std::collections::BTreeMap;

use super::GpuDevice;
use crate::model::TaskId;
use crate::scheduler::queue::GpuNeed;

/// One device's holders.
#[derive(Debug, Clone, Default)]
struct Device {
    /// Its memory, MB, where known.
    total_mb: Option<u64>,
    /// The attempt that holds it whole.
    whole: Option<TaskId>,
    /// Attempts holding a share, with the memory each asked for.
    shares: BTreeMap<TaskId, u64>,
    /// Memory used by programs Taskdeck did not start, MB (last reading).
    foreign_mb: u64,
}

impl Device {
    fn idle(&self) -> bool {
        self.whole.is_none() && self.shares.is_empty()
    }

    /// Memory left for another share, when it may be shared at all.
    fn room_mb(&self) -> Option<u64> {
        let total = self.total_mb?;
        if self.whole.is_some() {
            return None;
        }
        let taken = self.shares.values().sum::<u64>() + self.foreign_mb;
        Some(total.saturating_sub(taken))
    }
}

/// Every device and its holders.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    devices: BTreeMap<u32, Device>,
}

impl Devices {
    /// The given devices, all free.
    pub fn new(devices: &[GpuDevice]) -> Self {
        Self {
            devices: devices
                .iter()
                .map(|device| {
                    let state = Device {
                        total_mb: device.memory_mb,
                        ..Device::default()
                    };
                    (device.id, state)
                })
                .collect(),
        }
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The devices a request would get now, or none when it does not fit.
    pub fn choose(&self, need: GpuNeed) -> Option<Vec<u32>> {
        if need.count == 0 {
            return Some(Vec::new());
        }
        if let Some(share_mb) = need.share_mb() {
            return self
                .devices
                .iter()
                .filter_map(|(id, device)| Some((*id, device.room_mb()?)))
                .filter(|(_, room)| *room >= share_mb)
                .min_by_key(|(id, room)| (*room, *id))
                .map(|(id, _)| vec![id]);
        }
        let wanted = usize::try_from(need.count).unwrap_or(usize::MAX);
        let ids: Vec<u32> = self
            .devices
            .iter()
            .filter(|(_, device)| {
                device.idle()
                    && need
                        .memory_mb
                        .is_none_or(|mb| device.total_mb.is_none_or(|total| total >= mb))
            })
            .map(|(id, _)| *id)
            .take(wanted)
            .collect();
        (ids.len() == wanted).then_some(ids)
    }

    /// Records that attempt `id` holds `ids` for `need`.
    pub fn hold(&mut self, id: TaskId, need: GpuNeed, ids: &[u32]) {
        for device_id in ids {
            let Some(device) = self.devices.get_mut(device_id) else {
                continue;
            };
            match need.share_mb() {
                Some(mb) => {
                    device.shares.insert(id, mb);
                }
                None => device.whole = Some(id),
            }
        }
    }

    /// Frees what attempt `id` holds; true when it held anything.
    pub fn release(&mut self, id: TaskId) -> bool {
        let mut freed = false;
        for device in self.devices.values_mut() {
            if device.whole == Some(id) {
                device.whole = None;
                freed = true;
            }
            freed |= device.shares.remove(&id).is_some();
        }
        freed
    }

    /// Takes a reading of the memory programs Taskdeck did not start use
    /// on each device (MB); true when room for shares shrank or grew.
    pub fn set_foreign(&mut self, readings: &[(u32, u64)]) -> bool {
        let mut changed = false;
        for (device_id, mb) in readings {
            if let Some(device) = self.devices.get_mut(device_id) {
                changed |= device.foreign_mb != *mb;
                device.foreign_mb = *mb;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(memory: &[Option<u64>]) -> Devices {
        let list: Vec<GpuDevice> = memory
            .iter()
            .zip(0..)
            .map(|(memory_mb, id)| GpuDevice {
                id,
                memory_mb: *memory_mb,
            })
            .collect();
        Devices::new(&list)
    }

    fn share(mb: u64) -> GpuNeed {
        GpuNeed {
            count: 1,
            memory_mb: Some(mb),
        }
    }

    fn whole(count: u32) -> GpuNeed {
        GpuNeed {
            count,
            memory_mb: None,
        }
    }

    #[test]
    fn shares_fill_one_device_and_never_over_commit_it() {
        let mut gpus = devices(&[Some(80_000), Some(80_000)]);
        for id in 1..=3 {
            let ids = gpus.choose(share(25_000)).expect("fits");
            assert_eq!(ids, vec![0], "the fullest device that fits");
            gpus.hold(TaskId(id), share(25_000), &ids);
        }
        // 75 GB of 80 taken on device 0: the next share goes to device 1.
        assert_eq!(gpus.choose(share(25_000)), Some(vec![1]));
        assert_eq!(gpus.choose(share(5_000)), Some(vec![0]));
        // A whole request takes only a device nobody holds.
        assert_eq!(gpus.choose(whole(1)), Some(vec![1]));
        assert_eq!(gpus.choose(whole(2)), None);
        assert!(gpus.release(TaskId(2)));
        assert!(!gpus.release(TaskId(2)));
        assert_eq!(gpus.choose(share(25_000)), Some(vec![0]));
    }

    #[test]
    fn whole_devices_are_not_shared_and_foreign_memory_counts() {
        let mut gpus = devices(&[Some(40_000), Some(40_000)]);
        gpus.hold(TaskId(1), whole(1), &[0]);
        assert_eq!(gpus.choose(share(1_000)), Some(vec![1]));
        assert!(gpus.set_foreign(&[(1, 30_000)]));
        assert_eq!(gpus.choose(share(10_000)), Some(vec![1]));
        assert_eq!(gpus.choose(share(10_001)), None);
        assert!(!gpus.set_foreign(&[(1, 30_000)]), "no change");
        gpus.release(TaskId(1));
        assert_eq!(gpus.choose(share(30_000)), Some(vec![0]));
    }

    #[test]
    fn a_device_of_unknown_memory_is_never_shared() {
        let mut gpus = devices(&[None]);
        assert_eq!(gpus.choose(share(1)), None);
        assert_eq!(gpus.choose(whole(1)), Some(vec![0]));
        gpus.hold(TaskId(1), whole(1), &[0]);
        assert_eq!(gpus.choose(whole(1)), None);
    }

    #[test]
    fn whole_requests_with_memory_take_large_enough_idle_devices() {
        let gpus = devices(&[Some(16_000), Some(80_000), Some(80_000)]);
        let big = GpuNeed {
            count: 2,
            memory_mb: Some(40_000),
        };
        assert_eq!(gpus.choose(big), Some(vec![1, 2]));
        let too_many = GpuNeed {
            count: 3,
            memory_mb: Some(40_000),
        };
        assert_eq!(gpus.choose(too_many), None);
    }
}
