//! The CUDA libraries a `--features cuda` build uses: where they are looked for, and loading
//! them.
//!
//! The binary links none of them (the driver, cuBLAS with cuBLASLt, cuRAND): cudarc opens
//! each by name the first time one of its functions is called, and panics when it cannot, so
//! it must not be reached before they are known to be there. When a stage asks for a CUDA
//! device, [`Search::run`] looks for each library in the [`Places`] of this machine — the
//! folders of `MMFLOW_CUDA_LIBRARY_PATH`, the system loader's own paths, `/usr/local/cuda`,
//! the NVIDIA wheels where the first Python on `PATH` imports from — and opens the first file
//! that loads,
//! with `RTLD_GLOBAL`. glibc answers a later request for the same name (cudarc's) with the
//! library already loaded, wherever it was found. What is not found is a [`Missing`] naming
//! each library and every place looked in. CPU pipelines never come here.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use wait_timeout::ChildExt;

/// The environment variable naming folders (`:`-separated) searched before any other.
pub const LIBRARY_PATH_VARIABLE: &str = "MMFLOW_CUDA_LIBRARY_PATH";

/// Where a CUDA toolkit is installed by default.
const TOOLKIT: &str = "/usr/local/cuda";

/// A shared library mmflow's CUDA build loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaLibrary {
    /// The file name the loader knows it by (its soname), e.g. `libcublas.so.13`.
    pub file: String,
    /// What it is, for messages.
    pub what: &'static str,
}

impl CudaLibrary {
    fn new(file: String, what: &'static str) -> Self {
        CudaLibrary { file, what }
    }

    /// The NVIDIA driver's library (the same name for every CUDA version).
    pub fn driver() -> Self {
        CudaLibrary::new("libcuda.so.1".into(), "the NVIDIA driver")
    }

    /// Whether this is the driver's library.
    pub fn is_driver(&self) -> bool {
        *self == CudaLibrary::driver()
    }
}

/// The libraries candle opens a CUDA device with, for a build with CUDA `cuda_major`, in the
/// order they are loaded (cuBLASLt before cuBLAS, which needs it).
pub fn needed(cuda_major: u32) -> Vec<CudaLibrary> {
    vec![
        CudaLibrary::driver(),
        CudaLibrary::new(format!("libcublasLt.so.{cuda_major}"), "cuBLASLt"),
        CudaLibrary::new(format!("libcublas.so.{cuda_major}"), "cuBLAS"),
        CudaLibrary::new("libcurand.so.10".into(), "cuRAND"),
    ]
}

/// What the search depends on: this process's environment, or a test's.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `MMFLOW_CUDA_LIBRARY_PATH`.
    pub library_path: Option<OsString>,
    /// `PATH`, where Python is looked for.
    pub path: Option<OsString>,
    /// The CUDA toolkit's folder (`/usr/local/cuda`).
    pub toolkit: PathBuf,
}

impl Machine {
    /// This process's environment.
    pub fn this() -> Self {
        Machine {
            library_path: env::var_os(LIBRARY_PATH_VARIABLE),
            path: env::var_os("PATH"),
            toolkit: PathBuf::from(TOOLKIT),
        }
    }
}

/// One place a library is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The system loader's own search (`LD_LIBRARY_PATH`, `/etc/ld.so.cache`, its default
    /// folders), asked for the library by name.
    Loader,
    /// A folder.
    Folder(PathBuf),
}

/// How one place may provide a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// Ask the system loader for this name.
    Name(String),
    /// A file that exists.
    File(PathBuf),
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Name(name) => write!(f, "{name} (system loader)"),
            Candidate::File(file) => write!(f, "{}", file.display()),
        }
    }
}

/// Every place looked in, in order, and the Python whose wheels were among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    places: Vec<Place>,
    library_path_set: bool,
    python: Option<PathBuf>,
}

impl Places {
    /// The places of `machine`: the folders of `MMFLOW_CUDA_LIBRARY_PATH`, the system loader,
    /// the toolkit's `lib64` and `targets/*/lib`, then the `nvidia/cu13/lib` and
    /// `nvidia/*/lib` folders on the `sys.path` of the first Python on `PATH`. A folder reached
    /// twice (a link) is looked in once.
    pub fn on(machine: &Machine) -> Self {
        let named = machine
            .library_path
            .iter()
            .flat_map(env::split_paths)
            .filter(|folder| !folder.as_os_str().is_empty());
        let python = python_on(machine.path.as_deref());
        let installed = toolkit_folders(&machine.toolkit)
            .into_iter()
            .chain(python.as_deref().map(wheel_folders).unwrap_or_default());
        let places = named
            .map(Place::Folder)
            .chain([Place::Loader])
            .chain(installed.map(Place::Folder))
            .collect();
        Places {
            places: once_each(places, |place| match place {
                Place::Loader => None,
                Place::Folder(folder) => Some(same_folder(folder)),
            }),
            library_path_set: machine.library_path.is_some(),
            python,
        }
    }

    /// Where `file` may come from, in the order it is tried: the loader by name, and each
    /// folder that holds a file of that name.
    pub fn candidates(&self, file: &str) -> Vec<Candidate> {
        self.places
            .iter()
            .filter_map(|place| match place {
                Place::Loader => Some(Candidate::Name(file.to_string())),
                Place::Folder(folder) => {
                    let path = folder.join(file);
                    path.is_file().then_some(Candidate::File(path))
                }
            })
            .collect()
    }

    /// The places, as a message lists them.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.library_path_set {
            parts.push(format!("${LIBRARY_PATH_VARIABLE} (unset)"));
        }
        parts.extend(self.places.iter().map(|place| match place {
            Place::Loader => "the system loader's paths (LD_LIBRARY_PATH, /etc/ld.so.cache)".into(),
            Place::Folder(folder) => folder.display().to_string(),
        }));
        match &self.python {
            None => parts.push("no Python on PATH".into()),
            Some(python) => parts.push(format!(
                "the NVIDIA wheels on the sys.path of {}",
                python.display()
            )),
        }
        parts.join(", ")
    }
}

/// The toolkit's library folders: `lib64`, then each `targets/<platform>/lib`.
fn toolkit_folders(toolkit: &Path) -> Vec<PathBuf> {
    let mut folders = vec![toolkit.join("lib64")];
    folders.extend(
        subfolders(&toolkit.join("targets"))
            .into_iter()
            .map(|target| target.join("lib"))
            .filter(|lib| lib.is_dir()),
    );
    folders
}

/// The first `python3` (or else `python`) in the folders of `PATH`.
fn python_on(path: Option<&OsStr>) -> Option<PathBuf> {
    let folders: Vec<PathBuf> = env::split_paths(path?).collect();
    ["python3", "python"].iter().find_map(|name| {
        folders
            .iter()
            .map(|folder| folder.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The NVIDIA wheels' library folders on the import path of `python`: `nvidia/cu13/lib`
/// (CUDA 13 wheels share one tree) before the `nvidia/<package>/lib` of older wheels.
fn wheel_folders(python: &Path) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    for site in import_path(python, PYTHON_TIMEOUT) {
        let nvidia = site.join("nvidia");
        let shared = nvidia.join("cu13").join("lib");
        if shared.is_dir() {
            folders.push(shared.clone());
        }
        folders.extend(
            subfolders(&nvidia)
                .into_iter()
                .map(|package| package.join("lib"))
                .filter(|lib| *lib != shared && lib.is_dir()),
        );
    }
    once_each(folders, |folder| Some(same_folder(folder)))
}

/// How long Python may take to say where it imports from (a pyenv shim starts another
/// process first).
const PYTHON_TIMEOUT: Duration = Duration::from_secs(10);

/// The folders `python` imports from (its `sys.path`: site-packages, the user's, and
/// `PYTHONPATH`), asked of Python itself, which is the one way to know them for a venv, conda,
/// a distribution's Python or a pyenv shim alike. None if it fails or does not answer within
/// `timeout`.
fn import_path(python: &Path, timeout: Duration) -> Vec<PathBuf> {
    let Ok(mut child) = Command::new(python)
        .args([
            "-c",
            "import sys; print('\\n'.join(p for p in sys.path if p))",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    match child.wait_timeout(timeout) {
        Ok(Some(status)) if status.success() => {}
        Ok(Some(_)) | Err(_) => return Vec::new(),
        Ok(None) => {
            // Killing a child that has just exited fails harmlessly; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
            return Vec::new();
        }
    }
    let mut printed = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        if stdout.read_to_end(&mut printed).is_err() {
            return Vec::new();
        }
    }
    printed
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| PathBuf::from(OsStr::from_bytes(line)))
        .collect()
}

/// The folders directly inside `folder`, by name (none if it cannot be read).
fn subfolders(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = folder.read_dir() else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    found.sort();
    found
}

/// `items` without any whose `key` an earlier one had.
fn once_each<T>(items: Vec<T>, key: impl Fn(&T) -> Option<PathBuf>) -> Vec<T> {
    let mut seen = Vec::new();
    items
        .into_iter()
        .filter(|item| {
            let key = key(item);
            let new = !seen.contains(&key);
            seen.push(key);
            new
        })
        .collect()
}

/// What makes two paths the same folder: where they lead (the path itself if it leads
/// nowhere).
fn same_folder(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// A library that was found and loaded, and where from.
#[derive(Debug)]
pub struct Loaded {
    /// Which library.
    pub library: CudaLibrary,
    /// Where it came from.
    pub from: Candidate,
    /// Kept open for the life of the process (cudarc holds pointers into it).
    _handle: Library,
}

/// A library that was not loaded: every file of its name that was found, and why it did not
/// load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLoaded {
    /// Which library.
    pub library: CudaLibrary,
    /// Files found that failed to load, each with the loader's reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// The outcome of looking for every needed library once.
#[derive(Debug)]
pub struct Search {
    places: Places,
    loaded: Vec<Loaded>,
    not_loaded: Vec<NotLoaded>,
}

impl Search {
    /// Looks for each of `libraries` in `places`, in order, and loads the first candidate that
    /// loads.
    pub fn run(places: Places, libraries: &[CudaLibrary]) -> Self {
        let mut loaded = Vec::new();
        let mut not_loaded = Vec::new();
        for library in libraries {
            match load_first(&places, library) {
                Ok(found) => loaded.push(found),
                Err(missing) => not_loaded.push(missing),
            }
        }
        Search {
            places,
            loaded,
            not_loaded,
        }
    }

    /// The libraries loaded, and where from.
    pub fn loaded(&self) -> &[Loaded] {
        &self.loaded
    }

    /// Whether the driver's library is among those not loaded.
    pub fn lacks_driver(&self) -> bool {
        self.not_loaded.iter().any(|m| m.library.is_driver())
    }

    /// Every library that was not loaded, with where they were looked for; `Ok` when all were.
    pub fn complete(&self) -> Result<(), Missing> {
        if self.not_loaded.is_empty() {
            return Ok(());
        }
        Err(Missing {
            libraries: self.not_loaded.clone(),
            looked_in: self.places.describe(),
        })
    }
}

/// The first candidate of `library` that loads.
fn load_first(places: &Places, library: &CudaLibrary) -> Result<Loaded, NotLoaded> {
    let mut failed = Vec::new();
    for candidate in places.candidates(&library.file) {
        let target = match &candidate {
            Candidate::Name(name) => OsString::from(name),
            Candidate::File(path) => path.clone().into_os_string(),
        };
        // SAFETY: loading a library runs its initialisers; these are NVIDIA's libraries,
        // found by their names, which is what the dynamic linker would do at start-up.
        match unsafe { Library::open(Some(&target), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(handle) => {
                return Ok(Loaded {
                    library: library.clone(),
                    from: candidate,
                    _handle: handle,
                })
            }
            // The loader's "not found" says nothing new; a file that exists and fails does.
            Err(e) => {
                if let Candidate::File(path) = candidate {
                    failed.push((path, e.to_string()));
                }
            }
        }
    }
    Err(NotLoaded {
        library: library.clone(),
        failed,
    })
}

/// Libraries that could not be loaded: which, where they were looked for, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    libraries: Vec<NotLoaded>,
    looked_in: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .libraries
            .iter()
            .map(|m| format!("{} ({})", m.library.file, m.library.what))
            .collect();
        let verb = if names.len() == 1 { "was" } else { "were" };
        write!(
            f,
            "{} {verb} not found (looked in {})",
            names.join(", "),
            self.looked_in
        )?;
        for m in &self.libraries {
            for (file, why) in &m.failed {
                write!(f, "; {} is there but does not load: {why}", file.display())?;
            }
        }
        let driver = self.libraries.iter().any(|m| m.library.is_driver());
        let others = self.libraries.iter().any(|m| !m.library.is_driver());
        if driver {
            write!(f, ". Install the NVIDIA driver (580 or newer for CUDA 13)")?;
        }
        if others {
            write!(
                f,
                "{} cuBLAS and cuRAND of the CUDA major version mmflow was built with (a CUDA \
                 toolkit, a CUDA PyTorch, or `pip install nvidia-cublas nvidia-curand`), or name \
                 their folder in {LIBRARY_PATH_VARIABLE}",
                if driver { ", and" } else { ". Install" }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder tree with empty files where libraries would be.
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new(files: &[&str]) -> Self {
            let tree = Tree(tempfile::tempdir().unwrap());
            for file in files {
                let path = tree.path(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, b"").unwrap();
            }
            tree
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.0.path().join(relative)
        }

        /// A `python3` at `relative` whose `sys.path` is `import_path` (a shell script that
        /// prints it, as the real one would).
        fn python(&self, relative: &str, import_path: &[&str]) {
            use std::os::unix::fs::PermissionsExt;
            let lines: String = import_path
                .iter()
                .map(|folder| format!("echo '{}'\n", self.path(folder).display()))
                .collect();
            let script = self.path(relative);
            std::fs::create_dir_all(script.parent().unwrap()).unwrap();
            std::fs::write(&script, format!("#!/bin/sh\n{lines}")).unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn machine(&self, library_path: &[&str], path: &[&str]) -> Machine {
            let join =
                |folders: &[&str]| env::join_paths(folders.iter().map(|f| self.path(f))).unwrap();
            Machine {
                library_path: (!library_path.is_empty()).then(|| join(library_path)),
                path: (!path.is_empty()).then(|| join(path)),
                toolkit: self.path("cuda"),
            }
        }
    }

    const SITE: &str = "venv/lib/python3.12/site-packages";
    const USER_SITE: &str = "home/.local/lib/python3.12/site-packages";

    #[test]
    fn libraries_are_looked_for_in_order() {
        let tree = Tree::new(&[
            "custom/libcublas.so.13",
            "cuda/lib64/libcublas.so.13",
            "cuda/lib64/libcurand.so.10",
            "cuda/lib64/stubs/libcuda.so",
            "cuda/targets/x86_64-linux/lib/libcublas.so.13",
            "no-python-here/python2",
            &format!("{SITE}/nvidia/cu13/lib/libcublas.so.13"),
            &format!("{SITE}/nvidia/cublas/lib/libcublas.so.13"),
            &format!("{SITE}/nvidia/cublas/lib/libcublas.so.12"),
            &format!("{USER_SITE}/nvidia/curand/lib/libcurand.so.10"),
        ]);
        tree.python("venv/bin/python3", &[SITE, "absent-site", USER_SITE, SITE]);
        let machine = tree.machine(&["custom", "absent"], &["no-python-here", "venv/bin"]);
        let places = Places::on(&machine);
        let file = |relative: &str| Candidate::File(tree.path(relative));
        let name = |name: &str| Candidate::Name(name.into());
        assert_eq!(
            places.candidates("libcublas.so.13"),
            [
                file("custom/libcublas.so.13"),
                name("libcublas.so.13"),
                file("cuda/lib64/libcublas.so.13"),
                file("cuda/targets/x86_64-linux/lib/libcublas.so.13"),
                file(&format!("{SITE}/nvidia/cu13/lib/libcublas.so.13")),
                file(&format!("{SITE}/nvidia/cublas/lib/libcublas.so.13")),
            ]
        );
        assert_eq!(
            places.candidates("libcurand.so.10"),
            [
                name("libcurand.so.10"),
                file("cuda/lib64/libcurand.so.10"),
                file(&format!("{USER_SITE}/nvidia/curand/lib/libcurand.so.10")),
            ]
        );
        // The toolkit's link-time stub is never a candidate for the driver.
        assert_eq!(places.candidates("libcuda.so.1"), [name("libcuda.so.1")]);
        let described = places.describe();
        assert!(!described.contains(LIBRARY_PATH_VARIABLE), "{described}");
        assert!(described.contains(&format!(
            "the NVIDIA wheels on the sys.path of {}",
            tree.path("venv/bin/python3").display()
        )));
    }

    #[test]
    fn a_python_that_fails_or_hangs_gives_no_folders() {
        let tree = Tree::new(&[]);
        std::fs::create_dir_all(tree.path("site")).unwrap();
        tree.python("works/python3", &["site"]);
        let works = import_path(&tree.path("works/python3"), PYTHON_TIMEOUT);
        assert_eq!(works, [tree.path("site")]);

        let failing = tree.path("failing/python3");
        tree.python("failing/python3", &["site"]);
        let script = std::fs::read_to_string(&failing).unwrap();
        std::fs::write(&failing, format!("{script}exit 3\n")).unwrap();
        assert_eq!(import_path(&failing, PYTHON_TIMEOUT), Vec::<PathBuf>::new());

        let hanging = tree.path("hanging/python3");
        tree.python("hanging/python3", &["site"]);
        std::fs::write(&hanging, "#!/bin/sh\nsleep 30\n").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            import_path(&hanging, Duration::from_millis(200)),
            Vec::<PathBuf>::new()
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_folder_reached_through_a_link_is_looked_in_once() {
        let tree = Tree::new(&["cuda/targets/x86_64-linux/lib/libcurand.so.10"]);
        std::os::unix::fs::symlink("targets/x86_64-linux/lib", tree.path("cuda/lib64")).unwrap();
        let places = Places::on(&tree.machine(&[], &[]));
        assert_eq!(
            places.candidates("libcurand.so.10"),
            [
                Candidate::Name("libcurand.so.10".into()),
                Candidate::File(tree.path("cuda/lib64/libcurand.so.10")),
            ]
        );
        let described = places.describe();
        assert!(
            described.contains(&format!("${LIBRARY_PATH_VARIABLE} (unset)"))
                && described.contains("no Python on PATH"),
            "{described}"
        );
    }

    #[test]
    fn what_does_not_load_is_named_with_every_place_looked_in() {
        let tree = Tree::new(&["custom/libmmflow-empty.so.1"]);
        let places = Places::on(&tree.machine(&["custom"], &[]));
        let libraries = [
            CudaLibrary::new("libmmflow-absent.so.1".into(), "a library no machine has"),
            CudaLibrary::new("libmmflow-empty.so.1".into(), "an empty file"),
            // glibc's maths library: on every machine, found by the loader.
            CudaLibrary::new("libm.so.6".into(), "the C maths library"),
        ];
        let search = Search::run(places, &libraries);
        assert!(!search.lacks_driver());
        assert_eq!(search.loaded().len(), 1);
        assert_eq!(search.loaded()[0].from, Candidate::Name("libm.so.6".into()));
        let message = search.complete().unwrap_err().to_string();
        let empty = tree.path("custom/libmmflow-empty.so.1");
        for part in [
            "libmmflow-absent.so.1 (a library no machine has), libmmflow-empty.so.1 (an empty file) were not found",
            &format!("(looked in {}, the system loader's paths", tree.path("custom").display()),
            &format!("{} is there but does not load", empty.display()),
            "cuda/lib64",
            LIBRARY_PATH_VARIABLE,
            "pip install nvidia-cublas nvidia-curand",
        ] {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
        assert!(!message.contains("NVIDIA driver"), "{message}");
    }

    #[test]
    fn a_missing_driver_asks_for_the_driver() {
        let missing = |libraries: Vec<CudaLibrary>| Missing {
            libraries: libraries
                .into_iter()
                .map(|library| NotLoaded {
                    library,
                    failed: Vec::new(),
                })
                .collect(),
            looked_in: "the system loader's paths".into(),
        };
        let driver = missing(vec![CudaLibrary::driver()]).to_string();
        assert_eq!(
            driver,
            "libcuda.so.1 (the NVIDIA driver) was not found (looked in the system loader's \
             paths). Install the NVIDIA driver (580 or newer for CUDA 13)"
        );
        let all = missing(needed(13)).to_string();
        assert!(
            all.starts_with("libcuda.so.1 (the NVIDIA driver), libcublasLt.so.13 (cuBLASLt), libcublas.so.13 (cuBLAS), libcurand.so.10 (cuRAND) were not found")
                && all.contains("Install the NVIDIA driver (580 or newer for CUDA 13), and cuBLAS and cuRAND"),
            "{all}"
        );
    }

    #[test]
    fn the_build_needs_the_driver_cublas_and_curand() {
        let files: Vec<String> = needed(13).into_iter().map(|l| l.file).collect();
        assert_eq!(
            files,
            [
                "libcuda.so.1",
                "libcublasLt.so.13",
                "libcublas.so.13",
                "libcurand.so.10"
            ]
        );
    }
}
