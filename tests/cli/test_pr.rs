//! The pull-request loop on a real fleet: a Markdown plan of a 3,000-host change stays
//! under GitHub's comment limit, opens with the marker the workflow looks for, and ends
//! with the footer naming the version and both commits.

use crate::common::{celeroot_cmd, run, TestRepo};
use crate::test_perf_incremental::fleet;

/// GitHub refuses a pull-request comment longer than this many characters.
const GITHUB_COMMENT_LIMIT: usize = 65_536;

#[test]
fn a_time_zone_change_on_3000_hosts_fits_one_comment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = fleet::Spec {
        hosts: 3000,
        roles: 60,
        schedules: 3000,
    };
    let repo = fleet::generate(dir.path(), &spec);
    let cluster = fleet::cluster_yaml().replace("timezone: UTC", "timezone: Europe/Berlin");
    fleet::commit_files(
        &repo,
        &[("manifests/cluster.yaml", Some(&cluster))],
        "fleet: Europe/Berlin",
    );
    let mut cmd = celeroot_cmd(dir.path());
    cmd.args(["diff", "--from", "HEAD~1", "-o", "markdown"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 2, "{}", &out[out.len().saturating_sub(2000)..]);
    let md = out.trim_end_matches("[exit status: 2]\n");
    assert!(
        md.chars().count() < GITHUB_COMMENT_LIMIT && md.len() <= 60_000,
        "{} bytes",
        md.len()
    );
    let head: Vec<&str> = md.lines().take(17).collect();
    let head = head.join("\n").replace(&short(&repo, "HEAD~1"), "[FROM]");
    let head = head.replace(&short(&repo, "HEAD"), "[TO]");
    insta::assert_snapshot!(head, @r"
    <!-- celeroot-plan -->
    ### celeroot plan for `fleet`: `HEAD~1 ([FROM])` → `HEAD ([TO])`

    **Plan: 0 to add, 1501 to change, 0 to remove.**

    | Kind | ➕ add | 🔄 change | ➖ remove |
    |---|--:|--:|--:|
    | Cluster | 0 | 1 | 0 |
    | Schedule | 0 | 1500 | 0 |

    #### Cluster (1)

    | Action | Object | Consequences |
    |---|---|---|
    | 🔄 change | `fleet` | affects 3000 host(s) |

    <details><summary><code>~ Cluster/fleet</code></summary>
    ");
    let tail: Vec<&str> = md.lines().rev().take(5).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    let tail = tail.replace(&short(&repo, "HEAD~1"), "[FROM]");
    let tail = tail.replace(&short(&repo, "HEAD"), "[TO]");
    let tail = tail.replace(env!("CARGO_PKG_VERSION"), "[VERSION]");
    insta::assert_snapshot!(tail, @r"
    </details>

    _… and 1442 more Schedule change(s) not shown in detail (size budget); the footer names the command that prints them all._

    <sub>celeroot [VERSION] · from `[FROM]` to `[TO]` · the whole plan: <code>celeroot diff --from [FROM] --to [TO]</code></sub>
    ");
    // Every change is still accounted for: the cut ones are counted, not dropped (the
    // cluster and the 1,500 cron schedules; interval schedules do not move).
    let detailed = md.matches("<details>").count();
    let more: usize = md
        .lines()
        .filter_map(|l| l.strip_prefix("_… and "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(detailed + more, 1501, "{md}");
}

#[test]
fn a_markdown_budget_outside_github_limits_is_refused() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut cmd = repo.cmd();
    cmd.args(["diff", "--markdown-budget", "100", "-o", "markdown"]);
    insta::assert_snapshot!(run(cmd).0, @r"
    ------- stderr -------
    error: invalid value '100' for '--markdown-budget <BYTES>': 100 is not in 4000..=1048576

    For more information, try '--help'.
    [exit status: 1]
    ");
}

fn short(repo: &git2::Repository, rev: &str) -> String {
    let id = repo
        .revparse_single(rev)
        .expect("revision")
        .id()
        .to_string();
    id[..8].to_string()
}
