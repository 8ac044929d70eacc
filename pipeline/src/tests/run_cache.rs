//! The run-cache: restoring, verifying, concurrent fills and pruning.

use super::*;

/// The run-cache of `s` (the default place: beside its run directory).
fn cache_dir(s: &Setup) -> std::path::PathBuf {
    s.dir.path().join(crate::run_cache::DEFAULT_FOLDER)
}

fn entry_files(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![cache.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            // Not through links: a cache holds none of its own.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn outcome_of<'a>(outcomes: &'a [(String, StageOutcome)], id: &str) -> &'a StageOutcome {
    &outcomes.iter().find(|(i, _)| i == id).unwrap().1
}

#[test]
fn another_run_directory_restores_stages_from_the_run_cache_as_links() {
    use std::os::unix::fs::MetadataExt;
    let s = Setup::new(PIPELINE);
    let first = s.run(&[]);
    assert!(first
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::Ran { .. })));
    // One entry per stage: its files and its record.
    let files = entry_files(&cache_dir(&s));
    assert_eq!(
        files.iter().filter(|f| f.ends_with("entry.json")).count(),
        4
    );

    let mut other = s.pipeline(&[]);
    other.run_dir = s.dir.path().join("other");
    // The plan knows: every stage, the ones after restored ones included, will be restored.
    fs::create_dir_all(&other.run_dir).unwrap();
    let planned = crate::plan::plan(&other, &Manifest::default(), &Default::default()).unwrap();
    for (id, status) in &planned {
        assert!(
            matches!(status, crate::plan::PlanStatus::Restore(why) if why == "never ran"),
            "{id}: {status:?}"
        );
    }
    let second = run(&other, &RunOptions::default()).unwrap().stages;
    for (id, outcome) in &second {
        assert!(
            matches!(outcome, StageOutcome::Restored { .. }),
            "{id}: {outcome:?}"
        );
    }
    let here = s.run_dir().join("ab/out.txt");
    let there = other.run_dir.join("ab/out.txt");
    assert_eq!(fs::read(&there).unwrap(), b"AB!");
    // The same file, not a copy.
    assert_eq!(
        fs::metadata(&here).unwrap().ino(),
        fs::metadata(&there).unwrap().ino()
    );
    // The restored run is a run like any other: re-running it finds everything up to date,
    // and its lock records the stage's report.
    let third = run(&other, &RunOptions::default()).unwrap().stages;
    assert!(third
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::UpToDate)));
    let lock = Manifest::load(&other.run_dir).unwrap();
    assert_eq!(lock.stages["a"].report["length"], 1);

    // --force recomputes; a pipeline seed changes the seeded stages only: `c` draws nothing
    // at random and comes from the cache.
    let mut forced = RunOptions::default();
    forced.force.insert("a".into());
    let outcomes = run(&other, &forced).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "a"),
        StageOutcome::Ran { .. }
    ));
    let mut seeded = s.pipeline(&["pipeline.seed=7"]);
    seeded.run_dir = s.dir.path().join("seed7");
    let outcomes = run(&seeded, &RunOptions::default()).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "b"),
        StageOutcome::Ran { .. }
    ));
    assert!(matches!(
        outcome_of(&outcomes, "c"),
        StageOutcome::Restored { .. }
    ));
}

#[test]
fn a_run_cache_entry_that_does_not_match_its_record_is_recomputed_never_trusted() {
    let s = Setup::new(PIPELINE);
    s.run(&["pipeline.run_cache=false"]);
    assert!(!cache_dir(&s).exists(), "run_cache = false writes no cache");
    fs::remove_dir_all(s.run_dir()).unwrap();
    s.run(&[]);
    // Edited through the hard link of a run directory (same size, other content).
    fs::write(s.run_dir().join("ab/out.txt"), "XY!").unwrap();
    let mut other = s.pipeline(&[]);
    other.run_dir = s.dir.path().join("other");
    let outcomes = run(&other, &RunOptions::default()).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "a"),
        StageOutcome::Restored { .. }
    ));
    assert!(
        matches!(outcome_of(&outcomes, "ab"), StageOutcome::Ran { .. }),
        "{outcomes:?}"
    );
    assert_eq!(fs::read(other.run_dir.join("ab/out.txt")).unwrap(), b"AB!");
    // The stage that ran replaced the entry: a third run directory restores the right bytes.
    let mut third = s.pipeline(&[]);
    third.run_dir = s.dir.path().join("third");
    let outcomes = run(&third, &RunOptions::default()).unwrap().stages;
    assert!(matches!(
        outcome_of(&outcomes, "ab"),
        StageOutcome::Restored { .. }
    ));
    assert_eq!(fs::read(third.run_dir.join("ab/out.txt")).unwrap(), b"AB!");

    // A record that is not an entry's, and a link in an entry's place: neither is used; the
    // link is left where it is (it is not mmflow's), the bad record's folder is removed.
    for record in entry_files(&cache_dir(&s))
        .into_iter()
        .filter(|f| f.ends_with("entry.json"))
    {
        fs::write(&record, "{ not json").unwrap();
    }
    let elsewhere = s.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let key = crate::run_cache::RunCache::key(
        &Manifest::load(&s.run_dir()).unwrap().stages["c"].fingerprint,
        "c",
    );
    let entry = cache_dir(&s).join(&key[..2]).join(&key);
    fs::remove_dir_all(&entry).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    // A folder without a record in an entry's place is not mmflow's either: left alone.
    let key_b = crate::run_cache::RunCache::key(
        &Manifest::load(&s.run_dir()).unwrap().stages["b"].fingerprint,
        "b",
    );
    let foreign = cache_dir(&s).join(&key_b[..2]).join(&key_b);
    fs::remove_dir_all(&foreign).unwrap();
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let mut fourth = s.pipeline(&[]);
    fourth.run_dir = s.dir.path().join("fourth");
    let outcomes = run(&fourth, &RunOptions::default()).unwrap().stages;
    assert!(outcomes
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::Ran { .. })));
    assert!(fs::symlink_metadata(&entry)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(elsewhere.is_dir());
    assert_eq!(fs::read(foreign.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(fourth.run_dir.join("ab/out.txt")).unwrap(), b"AB!");
}

#[test]
fn two_runs_filling_the_same_entry_at_once_leave_one_sound_entry() {
    let s = Setup::new(&PIPELINE.replace("value = \"A\"", "value = \"A\", rendezvous = true"));
    // Both runs' `a` wait for each other, so both compute it and both try to publish it.
    let _turn = BARRIER_USERS.lock().unwrap_or_else(|e| e.into_inner());
    *BARRIER.lock().unwrap() = Some(Arc::new(Barrier::new(2)));
    let runs: Vec<crate::Pipeline> = ["one", "two"]
        .iter()
        .map(|name| {
            let mut p = s.pipeline(&[]);
            p.run_dir = s.dir.path().join(name);
            p
        })
        .collect();
    let outcomes: Vec<Vec<(String, StageOutcome)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|p| scope.spawn(move || run(p, &RunOptions::default()).unwrap().stages))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outcomes {
        assert!(
            matches!(outcome_of(o, "a"), StageOutcome::Ran { .. }),
            "{o:?}"
        );
        assert!(!o
            .iter()
            .any(|(_, o)| matches!(o, StageOutcome::Failed { .. })));
    }
    // One entry per stage, nothing left half-filled, and it restores.
    let files = entry_files(&cache_dir(&s));
    assert_eq!(
        files.iter().filter(|f| f.ends_with("entry.json")).count(),
        4
    );
    assert!(
        entry_files(&cache_dir(&s).join("tmp")).is_empty(),
        "{files:?}"
    );
    let mut third = s.pipeline(&[]);
    third.run_dir = s.dir.path().join("three");
    let outcomes = run(&third, &RunOptions::default()).unwrap().stages;
    assert!(outcomes
        .iter()
        .all(|(_, o)| matches!(o, StageOutcome::Restored { .. })));
    assert_eq!(fs::read(third.run_dir.join("ab/out.txt")).unwrap(), b"AB!");
}

/// The entry folders of a run-cache (`<cache>/<prefix>/<key>`), sorted.
fn entry_dirs(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = entry_files(cache)
        .into_iter()
        .filter(|f| f.ends_with("entry.json"))
        .map(|f| f.parent().unwrap().to_path_buf())
        .collect();
    dirs.sort();
    dirs
}

fn set_age(path: &Path, days: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    let file = if path.is_dir() {
        fs::File::open(path)
    } else {
        fs::File::options().append(true).open(path)
    };
    file.unwrap().set_modified(then).unwrap();
}

#[test]
fn pruning_removes_entries_unused_for_a_while_and_only_mmflows() {
    use crate::run_cache::RunCache;
    let s = Setup::new(PIPELINE);
    s.run(&[]);
    let cache_root = cache_dir(&s);
    let cache = RunCache::at(&cache_root);
    let entries = entry_dirs(&cache_root);
    assert_eq!(entries.len(), 4);
    // Two entries last used 40 days ago; the others today.
    for dir in &entries[..2] {
        set_age(&dir.join("entry.json"), 40);
    }
    // Not mmflow's: a folder without a record, a link to a folder elsewhere holding what
    // looks like an entry; and a work folder a killed run left.
    let foreign = cache_root.join("ab/not-an-entry");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("data"), b"keep").unwrap();
    let elsewhere = s.dir.path().join("elsewhere");
    let lookalike = elsewhere.join(entries[0].file_name().unwrap());
    fs::create_dir_all(&lookalike).unwrap();
    fs::copy(entries[0].join("entry.json"), lookalike.join("entry.json")).unwrap();
    set_age(&lookalike.join("entry.json"), 40);
    std::os::unix::fs::symlink(&elsewhere, cache_root.join("ff")).unwrap();
    let killed = cache.new_work_folder(&RunCache::key("f", "s")).unwrap();
    set_age(&killed, 40);
    // In `tmp/` too, not mmflow's: a user's folder, one named as mmflow names work folders
    // but without the mark mmflow writes first, a link to a folder elsewhere, a file.
    let users = cache_root.join("tmp/a-users-folder");
    let unmarked = cache_root.join(format!(
        "tmp/{}1",
        killed.file_name().unwrap().to_string_lossy()
    ));
    for dir in [&users, &unmarked] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("notes.txt"), b"keep").unwrap();
        set_age(dir, 40);
    }
    std::os::unix::fs::symlink(&elsewhere, cache_root.join("tmp/link")).unwrap();
    fs::write(cache_root.join("tmp/file"), b"keep").unwrap();
    fs::write(cache_root.join("README"), b"keep").unwrap();

    let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    let counted = cache.prune(month_ago, true).unwrap();
    assert_eq!(
        (counted.removed, counted.kept, counted.abandoned),
        (2, 2, 1)
    );
    let skipped: BTreeSet<String> = counted
        .skipped
        .iter()
        .map(|p| p.strip_prefix(&cache_root).unwrap().display().to_string())
        .collect();
    let unmarked_name = format!("tmp/{}", unmarked.file_name().unwrap().to_string_lossy());
    let expected = [
        "README",
        "ab/not-an-entry",
        "ff",
        "tmp/a-users-folder",
        unmarked_name.as_str(),
        "tmp/file",
        "tmp/link",
    ];
    assert_eq!(skipped, expected.map(String::from).into());
    assert_eq!(
        entry_dirs(&cache_root),
        entries,
        "a dry run removes nothing"
    );
    assert!(killed.exists());

    let pruned = cache.prune(month_ago, false).unwrap();
    assert_eq!(pruned, counted);
    assert!(pruned.removed_bytes > 0 && pruned.kept_bytes > 0);
    assert_eq!(entry_dirs(&cache_root), entries[2..].to_vec());
    assert!(!killed.exists());
    for dir in [&users, &unmarked] {
        assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"keep");
    }
    assert_eq!(fs::read(cache_root.join("tmp/file")).unwrap(), b"keep");
    assert_eq!(fs::read(foreign.join("data")).unwrap(), b"keep");
    assert!(lookalike.join("entry.json").exists());
    // The run directory keeps its files (links to the removed entries' files).
    assert_eq!(s.read("ab/out.txt"), "AB!");

    // Another run directory: the kept entries are restored (and marked used), the removed
    // ones' stages run again and are stored anew.
    for dir in &entries[2..] {
        set_age(&dir.join("entry.json"), 10);
    }
    let mut other = s.pipeline(&[]);
    other.run_dir = s.dir.path().join("other");
    let outcomes = run(&other, &RunOptions::default()).unwrap().stages;
    let restored = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, StageOutcome::Restored { .. }))
        .count();
    assert_eq!(restored, 2, "{outcomes:?}");
    assert_eq!(entry_dirs(&cache_root), entries);
    let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
    let last = cache.prune(week_ago, false).unwrap();
    assert_eq!(
        (last.removed, last.kept, last.abandoned),
        (0, 4, 0),
        "restoring marked the kept entries used: {last:?}"
    );
}
