//! Helpers shared by the benchmarks (not a bench target: cargo only discovers
//! `benches/*.rs` and `benches/*/main.rs`).

/// Stages everything in the work tree and commits it on HEAD; returns the commit id.
pub fn commit_all(repo: &git2::Repository, msg: &str) -> String {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = git2::Signature::now("Bench", "bench@example.com").expect("sig");
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
        .expect("commit")
        .to_string()
}
