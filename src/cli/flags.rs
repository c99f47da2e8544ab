//! Flags that `serve`, the window and `worker` share: the broker's
//! namespace, how `command` and `python` tasks run, and which GPUs tasks may
//! be given.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

#[cfg(feature = "broker")]
use std::time::Duration;

#[cfg(feature = "broker")]
use taskdeck::remote::{self, BrokerKey, KeyFallback, KeySources, Names};
#[cfg(feature = "broker")]
use taskdeck::runtime::BrokerSettings;
use taskdeck::scheduler::GpuDevice;
use taskdeck::tasks::{ExecSettings, GpuMemoryProbe, Registry, register_exec_tasks};

/// How `command` and `python` tasks run.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Python interpreter for `python` tasks.
    #[arg(
        long,
        env = "TASKDECK_PYTHON",
        default_value = "python3",
        value_name = "PROGRAM"
    )]
    pub(crate) python: String,
    /// Directory added to the import path of `python` tasks (repeatable).
    #[arg(long, value_name = "DIR")]
    pub(crate) pythonpath: Vec<PathBuf>,
    /// Most output kept in each attempt's log file, in MiB; what a task
    /// prints beyond it is read and dropped (the log says it was cut).
    #[arg(long, default_value_t = 16, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub(crate) log_cap_mb: u64,
}

/// Where the attempts' output logs go: `DATA_DIR/logs`.
pub(crate) fn logs_dir(data_dir: &std::path::Path) -> PathBuf {
    taskdeck::tasks::logfile::logs_dir(data_dir)
}

impl ExecArgs {
    /// The built-in and demo tasks plus `command` and `python`, logging
    /// into `DATA_DIR/logs`.
    pub(crate) fn registry(self, data_dir: &std::path::Path) -> Registry {
        let mut registry = taskdeck::demo::registry();
        let mut settings = ExecSettings::new(logs_dir(data_dir));
        settings.python = self.python;
        settings.log_cap_bytes = self.log_cap_mb * 1024 * 1024;
        settings.pythonpath = self.pythonpath;
        settings.gpu_memory_probe = Some(GpuMemoryProbe(Arc::new(
            taskdeck::telemetry::process_group_gpu_memory_mb,
        )));
        // This process keeps its files private; the tasks' programs write
        // theirs as the user would.
        settings.child_umask = taskdeck::runtime::private::user_umask();
        register_exec_tasks(&mut registry, settings);
        registry
    }
}

/// Distributed mode for `serve` and the window: the broker, its queue
/// namespace, and how long a silent worker keeps an attempt.
#[cfg(feature = "broker")]
#[derive(Debug, Args)]
pub(crate) struct DistributedArgs {
    /// RabbitMQ URL (amqp:// or amqps://): publish tasks to the broker for
    /// `taskdeck worker` processes instead of the in-process queue; this
    /// process's own workers then take tasks from the broker too.
    #[arg(
        long,
        env = "TASKDECK_BROKER",
        hide_env_values = true,
        value_name = "URL"
    )]
    broker: Option<String>,
    #[command(flatten)]
    names: BrokerArgs,
    /// Seconds an attempt stays with a worker process that stopped sending
    /// heartbeats before it counts as lost and runs again (with --broker;
    /// 1 or more). A worker whose process ends loses its attempts within
    /// about half a second whatever the lease.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    lease: f64,
}

/// The shortest lease `--lease` accepts.
#[cfg(feature = "broker")]
const MIN_LEASE_SECS: f64 = 1.0;

#[cfg(feature = "broker")]
impl DistributedArgs {
    /// The settings for the stack; none without `--broker`. Without a key
    /// given, the key is `data_dir/broker.key`, created when missing.
    pub(crate) fn settings(
        self,
        local_worker: bool,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Option<BrokerSettings>> {
        let Self {
            broker,
            names,
            lease,
        } = self;
        let Some(url) = broker else {
            return Ok(None);
        };
        if !lease.is_finite() || lease < MIN_LEASE_SECS {
            bail!(
                "--lease must be a number of seconds, {MIN_LEASE_SECS} or more: a shorter lease can run \
                 out on a healthy worker while its machine or the broker is busy"
            );
        }
        let url = url.parse()?;
        let key = names.key(KeyFallback::CreateIn(data_dir))?;
        Ok(Some(BrokerSettings {
            url,
            names: Names::new(&names.broker_namespace)?,
            lease: Duration::from_secs_f64(lease),
            local_worker,
            worker_name: remote::default_worker_name(&taskdeck::telemetry::host_name()),
            log_dir: None,
            key,
        }))
    }
}

/// Where the broker is and the key messages are signed with, for the
/// scheduler and for workers.
#[cfg(feature = "broker")]
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Queue-name prefix; the scheduler and its workers must use the same.
    #[arg(
        long,
        env = "TASKDECK_BROKER_NAMESPACE",
        default_value = remote::DEFAULT_NAMESPACE,
        value_name = "NAME"
    )]
    pub(crate) broker_namespace: String,
    /// File holding the key that signs every broker message, shared by the
    /// scheduler and its workers (private to its owner: mode 0600). The key
    /// itself may come in TASKDECK_BROKER_KEY instead [default:
    /// DATA_DIR/broker.key, which the scheduler creates on its first start].
    #[arg(long, env = remote::KEY_FILE_ENV, value_name = "PATH")]
    pub(crate) broker_key_file: Option<PathBuf>,
}

#[cfg(feature = "broker")]
impl BrokerArgs {
    /// The broker key: from `--broker-key-file`, its variable or
    /// `TASKDECK_BROKER_KEY`, else as `fallback` says.
    pub(crate) fn key(&self, fallback: KeyFallback<'_>) -> Result<BrokerKey, remote::KeyError> {
        BrokerKey::load(
            KeySources::with_environment(self.broker_key_file.clone()),
            fallback,
        )
    }
}

/// The GPUs tasks may ask for: declared with `--gpus` (ids, each with its
/// memory in MB after a colon where known: `0:81559,1`), or found by NVML.
pub(crate) fn gpu_devices(declared: Option<&str>) -> anyhow::Result<Vec<GpuDevice>> {
    match declared.map(str::trim) {
        Some("none" | "") => Ok(Vec::new()),
        Some(list) => {
            let mut devices: Vec<GpuDevice> = Vec::new();
            for part in list.split(',') {
                let (id, memory) = match part.trim().split_once(':') {
                    Some((id, memory)) => (id, Some(memory)),
                    None => (part.trim(), None),
                };
                let bad = || {
                    anyhow::anyhow!(
                        "--gpus takes device ids like 0,1, each with its memory in MB where \
                         known (0:24000,1:24000), or none; not {list:?}"
                    )
                };
                let id: u32 = id.trim().parse().map_err(|_| bad())?;
                let memory_mb = memory
                    .map(|mb| {
                        mb.trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|mb| *mb > 0)
                            .ok_or_else(bad)
                    })
                    .transpose()?;
                if devices.iter().any(|device| device.id == id) {
                    bail!("--gpus names device {id} twice");
                }
                devices.push(GpuDevice { id, memory_mb });
            }
            Ok(devices)
        }
        None => Ok(match taskdeck::telemetry::discover_gpus() {
            Ok(devices) => devices
                .into_iter()
                .map(|(id, memory_mb)| GpuDevice {
                    id,
                    memory_mb: Some(memory_mb),
                })
                .collect(),
            // Resource sampling reports why (no driver, say) once it starts.
            Err(_) => Vec::new(),
        }),
    }
}
