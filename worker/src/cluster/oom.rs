//! The kernel's out-of-memory kills in the cluster's memory cgroup: how a
//! worker killed for the container's memory limit is told apart from one that
//! crashed or was killed by hand. Read from cgroup v1's `memory.oom_control`
//! or v2's `memory.events` (their `oom_kill` line), where the kernel has them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The memory cgroup this process runs in, and the OOM kills seen so far.
#[derive(Debug)]
pub(crate) struct OomWatch {
    /// The file with the `oom_kill` count.
    events: PathBuf,
    /// The file with the memory limit in bytes (v1) or `max` (v2).
    limit: PathBuf,
    /// The count at the last look.
    seen: Mutex<u64>,
}

impl OomWatch {
    /// Finds this process's memory cgroup; `None` where there is none to read.
    pub fn find() -> Option<OomWatch> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let found = find_in(Path::new("/sys/fs/cgroup"), &own)?;
        let seen = oom_kills(&found.0)?;
        Some(OomWatch {
            events: found.0,
            limit: found.1,
            seen: Mutex::new(seen),
        })
    }

    /// When the kernel killed a process here since the last look: the memory
    /// limit in bytes (`None` inside: no limit could be read).
    pub fn killed_since_last_look(&self) -> Option<Option<u64>> {
        let now = oom_kills(&self.events)?;
        let mut seen = self.seen.lock().ok()?;
        let risen = now > *seen;
        *seen = now;
        risen.then(|| memory_limit(&self.limit))
    }
}

/// The `oom_kill` count of an events file.
fn oom_kills(events: &Path) -> Option<u64> {
    std::fs::read_to_string(events)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
}

/// The limit in a limit file: v2 writes `max` for none, v1 a huge number.
fn memory_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

/// The events and limit files of the memory cgroup named in `own` (the text
/// of /proc/self/cgroup), under the cgroup mount `root`. A container sees its
/// own cgroup at the mount's top while /proc names the host's path: both
/// places are tried, the named one first.
fn find_in(root: &Path, own: &str) -> Option<(PathBuf, PathBuf)> {
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let v1 = root.join("memory");
            for folder in [v1.join(path), v1] {
                candidates.push((
                    folder.join("memory.oom_control"),
                    folder.join("memory.limit_in_bytes"),
                ));
            }
        } else if controllers.is_empty() {
            for folder in [root.join(path), root.to_path_buf()] {
                candidates.push((folder.join("memory.events"), folder.join("memory.max")));
            }
        }
    }
    // v1's memory controller first: on a hybrid machine the v2 hierarchy has no memory files.
    candidates.sort_by_key(|(events, _)| !events.ends_with("memory.oom_control"));
    candidates
        .into_iter()
        .find(|(events, _)| oom_kills(events).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn a_v1_container_reads_its_own_cgroup_at_the_mounts_top() {
        let root = tempfile::tempdir().expect("a folder");
        let memory = root.path().join("memory");
        write(
            &memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(&memory.join("memory.limit_in_bytes"), "134217728\n");
        // /proc names the host's path, which the container does not see.
        let own = "12:memory:/kubepods/pod1/abc\n0::/\n";
        let (events, limit) = find_in(root.path(), own).expect("found");
        assert_eq!(oom_kills(&events), Some(2));
        assert_eq!(memory_limit(&limit), Some(134_217_728));
    }

    #[test]
    fn v2_reads_memory_events_and_max_means_no_limit() {
        let root = tempfile::tempdir().expect("a folder");
        let own_folder = root.path().join("user.slice/q8s");
        write(
            &own_folder.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        write(&own_folder.join("memory.max"), "max\n");
        let (events, limit) = find_in(root.path(), "0::/user.slice/q8s\n").expect("found");
        assert_eq!(oom_kills(&events), Some(1));
        assert_eq!(memory_limit(&limit), None);
    }

    #[test]
    fn a_kill_is_reported_once() {
        let root = tempfile::tempdir().expect("a folder");
        let events = root.path().join("memory.events");
        write(&events, "oom_kill 0\n");
        let watch = OomWatch {
            events: events.clone(),
            limit: root.path().join("memory.max"),
            seen: Mutex::new(0),
        };
        assert_eq!(watch.killed_since_last_look(), None);
        write(&events, "oom_kill 1\n");
        assert_eq!(watch.killed_since_last_look(), Some(None));
        assert_eq!(watch.killed_since_last_look(), None);
    }
}
