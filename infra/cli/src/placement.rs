//! Where `inlet dev`'s threads run (`inlet dev --cpu-placement`).
//!
//! A webhook's answer waits on two hand-offs between threads: the runtime thread that read the
//! request gives the send to the queues' writer thread, and the writer wakes the runtime
//! thread with the commit. When the two run on different CPUs and the other CPU is idle, each
//! wake is an interrupt to that CPU; in a VM that is an exit to the host. On the 2-vCPU
//! Firecracker VM of docs/performance.md a wake-and-answer between two threads took ≈ 57 µs
//! across CPUs and ≈ 1.5 µs on one (a futex ping-pong), against a whole request of ≈ 250 µs.
//! So `split` keeps the path a webhook waits on, the runtime threads and the queues' writer,
//! on one half of the CPUs the process may use, and the worker, the ledger's writer and the
//! checkpointers on the other half, where their work does not queue in front of a request.

use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How `inlet dev` places its threads on CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuPlacement {
    /// Webhooks and the queues' writes on one half of the CPUs, the worker and the ledger on
    /// the other (nothing is placed when the process may use one CPU only).
    #[default]
    Split,
    /// Every thread may run on every CPU the process may use.
    Off,
}

/// The two halves of the CPUs for [`CpuPlacement::Split`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPlan {
    /// The runtime threads that answer webhooks, and the queues' writer.
    pub ingest: Vec<usize>,
    /// The worker's thread, the ledger's writer and both files' checkpointers.
    pub delivery: Vec<usize>,
}

impl CpuPlan {
    /// The first half of `allowed` (rounded down, at least one) for ingest and the rest for
    /// delivery; `None` with fewer than two CPUs.
    pub fn split(allowed: &[usize]) -> Option<Self> {
        if allowed.len() < 2 {
            return None;
        }
        let (ingest, delivery) = allowed.split_at(allowed.len() / 2);
        Some(Self {
            ingest: ingest.to_vec(),
            delivery: delivery.to_vec(),
        })
    }
}

/// The plan for this process, and, for `split`, the calling thread placed on the ingest half:
/// call it on the main thread before the runtime starts, whose threads then inherit it (Linux
/// gives a new thread its creator's CPUs). `Ok(None)`: nothing to place.
pub fn prepare(placement: CpuPlacement) -> io::Result<Option<CpuPlan>> {
    if placement == CpuPlacement::Off {
        return Ok(None);
    }
    let Some(plan) = CpuPlan::split(&allowed_cpus()?) else {
        return Ok(None);
    };
    pin_current_thread(&plan.ingest)?;
    Ok(Some(plan))
}

/// The CPUs the calling thread may run on, ascending.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its own; pid 0 is this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET reads `set` at an index below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "threads are placed on CPUs on Linux only",
    ))
}

/// Let the calling thread run only on `cpus` (Linux sets it per thread).
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    for &cpu in cpus.iter().filter(|&&cpu| cpu < max) {
        // SAFETY: CPU_SET writes `set` at an index below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t and the size passed is its own; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "threads are placed on CPUs on Linux only",
    ))
}

/// The mean time for one thread to wake another through a channel and be woken by its
/// answer, over `rounds` round trips, the two threads placed on CPUs `a` and `b` (one CPU
/// or two): what a webhook's hand-off to a writer thread and back costs on this machine
/// (`inlet-load` prints it beside its runs).
pub fn handoff_round_trip(a: usize, b: usize, rounds: u32) -> io::Result<Duration> {
    let (to_other, other_gets) = mpsc::channel::<u32>();
    let (to_first, first_gets) = mpsc::channel::<u32>();
    let other = std::thread::spawn(move || -> io::Result<()> {
        pin_current_thread(&[b])?;
        while let Ok(n) = other_gets.recv() {
            if to_first.send(n).is_err() {
                break;
            }
        }
        Ok(())
    });
    let timed = std::thread::spawn(move || -> io::Result<Duration> {
        pin_current_thread(&[a])?;
        let gone = || io::Error::other("the other thread stopped");
        // A first exchange, so both threads are placed and running before the clock starts.
        to_other.send(0).map_err(|_| gone())?;
        first_gets.recv().map_err(|_| gone())?;
        let start = Instant::now();
        for n in 1..=rounds {
            to_other.send(n).map_err(|_| gone())?;
            first_gets.recv().map_err(|_| gone())?;
        }
        Ok(start.elapsed() / rounds.max(1))
    });
    let timed = joined(timed.join());
    // The other thread ends once the timed one's sender is dropped; its own error (it could
    // not be placed) explains the timed one's.
    joined(other.join())?;
    timed
}

/// A probe thread's result, its panic an error.
fn joined<T>(r: std::thread::Result<io::Result<T>>) -> io::Result<T> {
    r.unwrap_or_else(|_| Err(io::Error::other("a probe thread panicked")))
}

/// CPUs as `/proc/PID/status` writes them (`0-3,8`), read back into a list; `None` if the
/// text is not such a list.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => cpus.extend(from.parse::<usize>().ok()?..=to.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_takes_the_first_half_rounded_down_and_delivery_the_rest() {
        assert_eq!(CpuPlan::split(&[]), None);
        assert_eq!(CpuPlan::split(&[3]), None);
        let plan = |ingest: &[usize], delivery: &[usize]| {
            Some(CpuPlan {
                ingest: ingest.to_vec(),
                delivery: delivery.to_vec(),
            })
        };
        assert_eq!(CpuPlan::split(&[0, 1]), plan(&[0], &[1]));
        assert_eq!(CpuPlan::split(&[0, 1, 2]), plan(&[0], &[1, 2]));
        assert_eq!(CpuPlan::split(&[2, 5, 6, 9]), plan(&[2, 5], &[6, 9]));
    }

    #[test]
    fn cpu_lists_are_read_as_proc_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("0-x"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_placed_on_one_cpu_reports_only_that_cpu() {
        let allowed = allowed_cpus().expect("affinity");
        let last = *allowed.last().expect("at least one CPU");
        let seen = std::thread::spawn(move || {
            pin_current_thread(&[last]).expect("pin");
            allowed_cpus().expect("affinity")
        })
        .join()
        .expect("thread");
        assert_eq!(seen, vec![last]);
        // The calling thread kept its own.
        assert_eq!(allowed_cpus().expect("affinity"), allowed);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_handoff_probe_runs_where_it_is_told_or_says_it_cannot() {
        let cpu = allowed_cpus().expect("affinity")[0];
        let round_trip = handoff_round_trip(cpu, cpu, 100).expect("probe");
        assert!(round_trip > Duration::ZERO);
        // A CPU no machine has: the thread cannot be placed, and the probe says so.
        assert!(handoff_round_trip(cpu, 1 << 20, 100).is_err());
        assert!(handoff_round_trip(1 << 20, cpu, 100).is_err());
    }
}
