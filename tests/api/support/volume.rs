//! A directory laid out and updated as kubelet's atomic writer does for ConfigMap and
//! downward API volumes: the file `NAME` -> `..data/NAME`, `..data` -> a timestamped
//! directory; an update writes a new timestamped directory, points `..data_tmp` at it,
//! renames that over `..data` (the one atomic step) and removes the old directory.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct AtomicVolume {
    dir: PathBuf,
    /// The temp dir the volume is in, removed with it.
    _temp: Option<tempfile::TempDir>,
    file: String,
    version: u32,
}

impl AtomicVolume {
    /// A volume holding the file `file` with `content`, in a temp dir of its own.
    pub fn new(file: &str, content: &str) -> AtomicVolume {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        AtomicVolume::laid_out(dir, Some(temp), file, content)
    }

    /// [`AtomicVolume::new`] as the directory `dir` (created, readable by every user, as a
    /// volume is to a container's user).
    #[allow(
        dead_code,
        reason = "the libvirt tests' (their gateway runs as another user)"
    )]
    pub fn new_at(dir: &Path, file: &str, content: &str) -> AtomicVolume {
        std::fs::create_dir(dir).expect("the volume's directory");
        AtomicVolume::laid_out(dir.to_path_buf(), None, file, content)
    }

    fn laid_out(
        dir: PathBuf,
        temp: Option<tempfile::TempDir>,
        file: &str,
        content: &str,
    ) -> AtomicVolume {
        let mut volume = AtomicVolume {
            dir,
            _temp: temp,
            file: file.to_string(),
            version: 0,
        };
        volume.update(content);
        symlink(format!("..data/{file}"), volume.path()).expect("file link");
        volume
    }

    /// The file's path, as a container sees it.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Writes a new version and swaps `..data` to it with one rename.
    pub fn update(&mut self, content: &str) {
        self.version += 1;
        let name = format!(
            "..2026_12_05_{:02}_00_00.{}",
            self.version,
            1000 + self.version
        );
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).expect("data dir");
        std::fs::write(data.join(&self.file), content).expect("write the file");
        let staged = self.dir.join("..data_tmp");
        symlink(&name, &staged).expect("staged link");
        std::fs::rename(&staged, self.dir.join("..data")).expect("swap ..data");
        if self.version > 1 {
            let old = format!(
                "..2026_12_05_{:02}_00_00.{}",
                self.version - 1,
                999 + self.version
            );
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old version");
        }
    }
}

/// A pod's annotations as a downward API volume writes them: `key="value"` lines sorted by
/// key, the value quoted as Go's `%q` quotes printable text, no newline after the last.
pub fn downward_api_annotations(annotations: &[(&str, &str)]) -> String {
    let mut sorted = annotations.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|(key, value)| {
            let quoted: String = value
                .chars()
                .flat_map(|c| match c {
                    '"' => vec!['\\', '"'],
                    '\\' => vec!['\\', '\\'],
                    '\n' => vec!['\\', 'n'],
                    c => vec![c],
                })
                .collect();
            format!("{key}=\"{quoted}\"")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
