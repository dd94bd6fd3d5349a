//! Issue 20: a sharded distillation under a real Slurm scheduler. The test starts a one-node
//! cluster on this machine (deploy/slurm/local-cluster.sh: Debian's slurm-wlm and munge, as root;
//! scripts/test.sh installs them), submits a 2-shard job array with `dace slurm submit`, requeues
//! one array task while it runs, waits for the dependent merge job, and compares the merged
//! package with a single-process distillation byte for byte. Without Slurm the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DACE: &str = env!("CARGO_BIN_EXE_dace");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster, stopped when the test ends (passing or not).
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let script = repo().join("deploy/slurm/local-cluster.sh");
        ok("starting the one-node Slurm cluster", Command::new(&script).arg("start").arg(dir).output().unwrap());
        Cluster { dir: dir.to_path_buf(), conf: dir.join("slurm.conf") }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf).current_dir(repo());
        c
    }

    /// `scontrol show job ID`'s JobState (the first task's for an array).
    fn state(&self, job: &str) -> String {
        let out = self.command("scontrol").args(["show", "job", "-o", job]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().find_map(|f| f.strip_prefix("JobState=")).unwrap_or("UNKNOWN").to_string()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.join("log")).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all += &format!("--- {}\n{}\n", entry.path().display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/slurm/local-cluster.sh")).arg("stop").arg(&self.dir).output();
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn package_bytes(dir: &Path) -> Vec<Vec<u8>> {
    ["manifest.json", "patches.bin", "labels.bin"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn a_slurm_job_array_distills_shards_that_merge_into_the_single_process_package() {
    // Slurm's #SBATCH lines take no blanks: the folder lives under /tmp.
    let tmp = tempfile::Builder::new().prefix("dace-slurm-").tempdir_in("/tmp").unwrap();
    let cluster = Cluster::start(&tmp.path().join("cluster"));
    let seeds = "24";
    let distill = [
        "--data",
        "embedded",
        "--teacher",
        "artifacts/teachers/fashion-mnist-convnet3",
        "--prior",
        "artifacts/priors/fashion-mnist",
        "--ipc",
        "1",
        "--mipc",
        "6",
        "--seeds",
        seeds,
        "--batch",
        "16",
        "--device",
        "cpu",
    ];
    let single = tmp.path().join("single");
    let mut run = Command::new(DACE);
    run.current_dir(repo()).arg("distill").args(distill).arg("--out").arg(&single);
    ok("the single-process distillation", run.output().unwrap());

    let out = tmp.path().join("run");
    // Checkpoint after every seed, so that the requeued task has something to resume from.
    let mut submit = cluster.command(DACE);
    submit.env("DACE_CHECKPOINT_SECONDS", "0").args(["slurm", "submit", "--shards", "2", "--out"]).arg(&out).arg("--").args(distill);
    ok("dace slurm submit", submit.output().unwrap());
    let jobs = json(&out.join("slurm/jobs.json"));
    let (array, merge) = (jobs["array_job"].as_str().unwrap().to_string(), jobs["merge_job"].as_str().unwrap().to_string());

    // Requeue shard 0 once it has checkpointed some seeds but not all: Slurm kills it and runs
    // it again, and the second run resumes instead of starting over.
    let partial = out.join("shards/.shard-0.partial.json");
    let logs = || {
        format!(
            "{}\n{}",
            cluster.logs(),
            std::fs::read_dir(out.join("slurm/logs"))
                .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        )
    };
    wait_for("shard 0's first checkpoint", Duration::from_secs(300), || partial.exists(), logs);
    let task0 = format!("{array}_0");
    ok("scontrol requeue", cluster.command("scontrol").args(["requeue", &task0]).output().unwrap());
    // A requeued job waits (BeginTime now + 2 min) before it may start again: release it now.
    wait_for("the requeued task to pend", Duration::from_secs(60), || cluster.state(&task0) == "PENDING", logs);
    ok(
        "scontrol update StartTime",
        cluster.command("scontrol").args(["update", &format!("JobId={task0}"), "StartTime=now"]).output().unwrap(),
    );

    let finished =
        |job: &str| matches!(cluster.state(job).as_str(), "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY");
    wait_for("the merge job", Duration::from_secs(900), || finished(&merge), logs);
    assert_eq!(cluster.state(&merge), "COMPLETED", "{}", logs());
    assert!(package_bytes(&out.join("package")) == package_bytes(&single), "the merged package differs from the single-process one");

    // The requeued shard resumed: it made only the seeds its first run had not checkpointed.
    let report = json(&out.join("shards/shard-0/distill_report.json"));
    let (resumed, items, expansions) = (
        report["report"]["resumed_seeds"].as_u64().unwrap(),
        report["report"]["items"].as_u64().unwrap(),
        report["report"]["expansions"].as_u64().unwrap(),
    );
    let seeds: u64 = seeds.parse().unwrap();
    assert!(resumed > 0 && resumed < seeds, "shard 0 resumed {resumed} of {seeds} seeds\n{}", logs());
    assert_eq!(expansions, (seeds - resumed) * items);
    let task_log = std::fs::read_to_string(out.join(format!("slurm/logs/distill-{array}_0.log"))).unwrap();
    assert!(task_log.matches("package shard").count() == 1, "shard 0's log (both runs, appended):\n{task_log}");
}

/// Bad launcher input is refused before anything is submitted, naming what is wrong; `--dry-run`
/// writes the run's sbatch files without a scheduler.
#[test]
fn slurm_submit_refuses_bad_options_and_dry_runs_without_a_scheduler() {
    let tmp = tempfile::Builder::new().prefix("dace-slurm-").tempdir_in("/tmp").unwrap();
    let submit = |shards: &str, out: &Path, distill: &[&str]| {
        let mut c = Command::new(DACE);
        c.current_dir(repo()).args(["slurm", "submit", "--shards", shards, "--dry-run", "--out"]).arg(out).arg("--").args(distill);
        c.output().unwrap()
    };
    let base = ["--data", "embedded", "--teacher", "artifacts/teachers/fashion-mnist-convnet3"];
    let run = tmp.path().join("run");
    let refusals: [(&str, &Path, Vec<&str>, &str); 5] = [
        ("2", &run, vec!["--out", "x"], "`--out` is set by `dace slurm submit`"),
        ("2", &run, vec!["--shard=0/2"], "`--shard` is set by `dace slurm submit`"),
        ("2", &run, vec!["--no-such-flag"], "the distill options after `--` do not parse"),
        ("0", &run, vec![], "--shards"),
        ("2", &tmp.path().join("with blank"), vec![], "cannot hold a path with blanks"),
    ];
    for (shards, out, extra, want) in refusals {
        let output = submit(shards, out, &[&base[..], &extra[..]].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(want) && !stderr.contains("panicked"), "{extra:?}: {stderr}");
    }
    assert!(!run.join("slurm/jobs.json").exists(), "a refused submission wrote its files");

    ok("dace slurm submit --dry-run", submit("2", &run, &base));
    let distill = std::fs::read_to_string(run.join("slurm/distill.sbatch")).unwrap();
    for want in
        ["#SBATCH --array=0-1", "#SBATCH --requeue", "#SBATCH --open-mode=append", "distill --data embedded", "--shard \"$shard/2\""]
    {
        assert!(distill.contains(want), "distill.sbatch lacks `{want}`:\n{distill}");
    }
    let merge = std::fs::read_to_string(run.join("slurm/merge.sbatch")).unwrap();
    assert!(merge.contains("package merge") && merge.contains("shards/shard-0") && merge.contains("shards/shard-1"), "{merge}");
    let jobs = json(&run.join("slurm/jobs.json"));
    assert!(jobs["array_job"].is_null() && jobs["shards"] == 2, "{jobs}");
}
